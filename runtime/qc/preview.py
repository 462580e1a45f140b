"""``preview.png``: one QC picture of a run, like TotalSegmentator's ``--preview`` or FastSurfer's ``--qc_snap``.

Layout (top to bottom): a title line; three orthogonal views side by side (axial, coronal, sagittal); a legend
with every bundle name and its colour swatch, in columns, read top to bottom then left to right.

Display convention: the voxel grid is reoriented to RAS (``nibabel.orientations.io_orientation`` +
``apply_orientation``), so any flipped or permuted input gives the same picture. Neurological convention: the
subject's left is on the picture's left (L/R markers say so). Axial: anterior up; coronal and sagittal: superior
up; sagittal: anterior on the left. Each 2D plane is resampled by nearest neighbour to square pixels of
``mm_per_pixel`` (the smallest voxel size divided by an integer zoom), so anisotropic voxels are not squashed.

Background (grey): the slice through the middle of the nonzero extent of ``background`` (the caller passes the
length of the first peak, ``np.linalg.norm(peaks[..., :3], axis=-1)``), scaled so its 99th percentile is white.
Bundles: a maximum-intensity projection of each mask along the view axis, drawn opaque in the colour
:func:`bundle_colour` gives its index. Overlap rule: where projections overlap, the bundle whose projection in
that view covers the fewest pixels is drawn on top (small bundles stay visible over big ones such as CC); equal
areas: the lower index. The rule does not depend on the order of :meth:`PreviewCanvas.add_bundle` calls.

Memory: only three 2D label planes and three 2D area planes are kept, never the masks. Output bytes depend only
on the inputs (no timestamps or other metadata in the PNG). Pillow is imported only inside the functions.
"""
from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.affines import voxel_sizes
from nibabel.orientations import apply_orientation, io_orientation

from runtime.io.atomic import atomic_target
from runtime.errors import MissingExtraError

PILLOW_MISSING = "--preview needs Pillow: pip install 'tractseg-aot[qc]'"
TARGET_VIEW_PIXELS = 360      # the longest view side is zoomed (integer factor) towards this many pixels
FONT_SIZE = 13
MARGIN = 16                   # around every view (holds the orientation letters) and the picture
CANVAS_RGB = (0, 0, 0)
TEXT_RGB = (235, 235, 235)
MARKER_RGB = (255, 220, 60)
GOLDEN = 0.618033988749895

# name, axis sliced/projected, horizontal axis, horizontal reversed, (left, right, top, bottom) markers.
# The vertical axis is the remaining one, always shown with its high (A or S) end up.
VIEWS: tuple[tuple[str, int, int, bool, tuple[str, str, str, str]], ...] = (
    ("axial", 2, 0, False, ("L", "R", "A", "P")),
    ("coronal", 1, 0, False, ("L", "R", "S", "I")),
    ("sagittal", 0, 1, True, ("A", "P", "S", "I")),
)


def bundle_colour(index: int) -> tuple[int, int, int]:
    """The one palette: golden-ratio hue steps, saturation and value cycling so neighbours differ; never grey."""
    hue = (index * GOLDEN) % 1.0
    saturation = (0.95, 0.75, 0.55)[index % 3]
    value = (1.0, 0.85)[(index // 3) % 2]
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _pillow() -> Any:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise MissingExtraError(PILLOW_MISSING) from None
    return Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Layout:
    """Where things are in the picture (pixels, boxes are ``(left, top, right, bottom)``, right/bottom exclusive)."""

    size: tuple[int, int]
    views: dict[str, tuple[int, int, int, int]]
    legend: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int, int]], ...]   # name, colour, swatch box


class PreviewCanvas:
    """Accumulates bundle projections over the background's mid-slices; :meth:`save` writes the PNG."""

    def __init__(self, background: np.ndarray, affine: np.ndarray, bundle_names: Sequence[str], title: str) -> None:
        if background.ndim != 3:
            raise ValueError(f"preview: background must be 3D (X, Y, Z), got shape {background.shape}")
        self.shape = background.shape
        self.bundle_names = tuple(bundle_names)
        self.title = title
        self.ornt = io_orientation(np.asarray(affine, dtype=np.float64))
        sizes = np.abs(voxel_sizes(np.asarray(affine, dtype=np.float64)))
        self.spacing = np.empty(3)
        self.spacing[self.ornt[:, 0].astype(int)] = sizes          # mm per voxel along each RAS axis
        ras = apply_orientation(np.nan_to_num(np.asarray(background, dtype=np.float32)), self.ornt)
        self.ras_shape = ras.shape
        zoom = max(1, round(TARGET_VIEW_PIXELS / max(n * s / sizes.min() for n, s in zip(ras.shape, self.spacing))))
        self.mm_per_pixel = float(sizes.min()) / zoom
        self.slices: list[np.ndarray] = []
        for _, axis, _, _, _ in VIEWS:
            nonzero = np.flatnonzero(np.any(ras != 0, axis=tuple(a for a in range(3) if a != axis)))
            middle = (int(nonzero[0]) + int(nonzero[-1])) // 2 if nonzero.size else ras.shape[axis] // 2
            self.slices.append(np.take(ras, middle, axis=axis).astype(np.float32))
        self.labels = [np.full(s.shape, -1, dtype=np.int16) for s in self.slices]
        self.areas = [np.full(s.shape, np.iinfo(np.int64).max, dtype=np.int64) for s in self.slices]

    def add_bundle(self, index: int, mask: np.ndarray) -> None:
        """Project bundle ``index``'s mask (X, Y, Z, nonzero = inside) into the three views."""
        if not 0 <= index < len(self.bundle_names):
            raise ValueError(f"preview: bundle index {index} out of range 0..{len(self.bundle_names) - 1}")
        if mask.shape != self.shape:
            raise ValueError(f"preview: mask shape {mask.shape} != background shape {self.shape}")
        ras = apply_orientation(mask if mask.dtype == np.bool_ else mask != 0, self.ornt)
        for (_, axis, _, _, _), labels, areas in zip(VIEWS, self.labels, self.areas):
            projection = ras.any(axis=axis)
            area = int(np.count_nonzero(projection))
            if area == 0:
                continue
            wins = projection & ((area < areas) | ((area == areas) & (index < labels)))
            labels[wins] = index
            areas[wins] = area

    def _display(self, plane: np.ndarray, view: int) -> np.ndarray:
        """A (horizontal, vertical) RAS plane as display rows x columns, resampled to square pixels."""
        _, axis, horizontal, reverse, _ = VIEWS[view]
        vertical = 3 - axis - horizontal
        image = plane.T[::-1, ::-1 if reverse else 1]                # rows: vertical axis, high end up
        rows = [self._resample_index(image.shape[0], self.spacing[vertical])]
        cols = self._resample_index(image.shape[1], self.spacing[horizontal])
        return image[np.ix_(rows[0], cols)]

    def _resample_index(self, n: int, spacing: float) -> np.ndarray:
        out = max(1, round(n * spacing / self.mm_per_pixel))
        return np.minimum(((np.arange(out) + 0.5) * self.mm_per_pixel / spacing).astype(np.int64), n - 1)

    def render_views(self) -> list[np.ndarray]:
        """The three views as uint8 RGB arrays (rows, columns, 3)."""
        nonzero = np.concatenate([s[s > 0] for s in self.slices])
        top = float(np.percentile(nonzero, 99)) if nonzero.size else 1.0
        palette = np.array([bundle_colour(i) for i in range(len(self.bundle_names))] or [(0, 0, 0)], np.uint8)
        views = []
        for v, (plane, labels) in enumerate(zip(self.slices, self.labels)):
            grey = np.clip(self._display(plane, v) / (top or 1.0) * 255.0, 0, 255).astype(np.uint8)
            rgb = np.repeat(grey[..., None], 3, axis=2)
            shown = self._display(labels, v)
            rgb[shown >= 0] = palette[shown[shown >= 0]]
            views.append(rgb)
        return views

    def render(self) -> tuple[Any, Layout]:
        """The picture (a PIL RGB image) and its :class:`Layout`."""
        Image, ImageDraw, ImageFont = _pillow()
        font = ImageFont.load_default(size=FONT_SIZE)
        line = FONT_SIZE + 5
        views = self.render_views()
        width = max(640, sum(v.shape[1] + 3 * MARGIN for v in views) + MARGIN)
        views_top = MARGIN + 2 * line + line                                  # title, subtitle, view names
        views_bottom = views_top + max(v.shape[0] for v in views) + 2 * MARGIN
        scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        swatch = FONT_SIZE
        column = max([scratch.textlength(n, font=font) for n in self.bundle_names] or [0]) + swatch + 18
        n_columns = max(1, int((width - 2 * MARGIN) // column))
        n_rows = math.ceil(len(self.bundle_names) / n_columns)
        height = views_bottom + MARGIN + n_rows * line + MARGIN
        picture = Image.new("RGB", (width, height), CANVAS_RGB)
        draw = ImageDraw.Draw(picture)
        draw.text((MARGIN, MARGIN), self.title, fill=TEXT_RGB, font=font)
        draw.text((MARGIN, MARGIN + line), f"{len(self.bundle_names)} bundles: maximum-intensity projections over "
                  f"mid-slices of the first peak's length; neurological view (L left); overlaps: smallest on top",
                  fill=(160, 160, 160), font=font)
        boxes: dict[str, tuple[int, int, int, int]] = {}
        x = MARGIN
        for (name, _, _, _, (left, right, top_mark, bottom)), rgb in zip(VIEWS, views):
            h, w = rgb.shape[:2]
            box = (x + MARGIN, views_top + MARGIN, x + MARGIN + w, views_top + MARGIN + h)
            picture.paste(Image.fromarray(rgb, "RGB"), box[:2])
            boxes[name] = box
            draw.text((x, views_top - line), name.capitalize(), fill=TEXT_RGB, font=font)
            for mark, (mx, my) in ((left, (x + MARGIN // 2, box[1] + h // 2)), (right, (box[2] + MARGIN // 2,
                                   box[1] + h // 2)), (top_mark, (box[0] + w // 2, box[1] - MARGIN // 2)),
                                   (bottom, (box[0] + w // 2, box[3] + MARGIN // 2))):
                draw.text((mx, my), mark, fill=MARKER_RGB, font=font, anchor="mm")
            x += w + 3 * MARGIN                                               # one MARGIN between cells
        legend = []
        for i, name in enumerate(self.bundle_names):
            left = MARGIN + (i // n_rows) * int(column)
            top = views_bottom + MARGIN + (i % n_rows) * line
            colour = bundle_colour(i)
            swatch_box = (left, top + 2, left + swatch, top + 2 + swatch)
            draw.rectangle((swatch_box[0], swatch_box[1], swatch_box[2] - 1, swatch_box[3] - 1), fill=colour)
            draw.text((left + swatch + 6, top), name, fill=TEXT_RGB, font=font)
            legend.append((name, colour, swatch_box))
        return picture, Layout((width, height), boxes, tuple(legend))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the PNG atomically (hidden temporary in the same folder, fsync, rename); no metadata chunks."""
        picture, _ = self.render()
        target = Path(path)
        with atomic_target(target) as temporary:
            picture.save(temporary, format="PNG", optimize=True)
        return target
