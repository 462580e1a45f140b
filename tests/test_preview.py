"""runtime.qc.preview: render synthetic bundles at known places, then read the PNG back and check its pixels."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

PIL = pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'tractseg-aot[qc]'): preview untested")
from PIL import Image  # noqa: E402

from runtime.qc.preview import PILLOW_MISSING, PreviewCanvas, bundle_colour  # noqa: E402

SHAPE = (30, 36, 16)
# LAS grid with non-isotropic voxels (2 x 2 x 3 mm): x index runs right -> left.
AFFINE = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -36], [0, 0, 3.0, -24], [0, 0, 0, 1]])
NAMES = ("RAS_blob", "LPI_blob", "centre", "never_added")
# Voxel index boxes (half-open) on that grid. RAS_blob: world x 14..24 (right), y 12..28 (anterior), z 6..18
# (superior); LPI_blob: left, posterior, inferior; centre: a bigger box in the middle.
BOXES = {0: ((3, 9), (24, 33), (10, 15)), 1: ((21, 28), (3, 11), (1, 5)), 2: ((8, 23), (10, 27), (5, 11))}
PIXEL_TOL = 1.5        # nearest-neighbour resampling and rounding of the view size: within 1.5 display pixels


def volumes(flip_x: bool = False) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Background (an ellipsoid with texture), affine and masks; flip_x stores the same anatomy as RAS."""
    rng = np.random.default_rng(7)
    x, y, z = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    inside = ((x - 14.5) / 15) ** 2 + ((y - 17.5) / 18) ** 2 + ((z - 7.5) / 8) ** 2 <= 1
    background = (inside * (0.2 + 0.8 * rng.random(SHAPE))).astype(np.float32)
    masks = {}
    for index, box in BOXES.items():
        mask = np.zeros(SHAPE, dtype=np.uint8)
        mask[tuple(slice(*b) for b in box)] = 1
        masks[index] = mask
    if not flip_x:
        return background, AFFINE, masks
    flipped = AFFINE @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    return background[::-1].copy(), flipped, {i: m[::-1].copy() for i, m in masks.items()}


def canvas_for(flip_x: bool = False, order: tuple[int, ...] = (0, 1, 2)) -> PreviewCanvas:
    background, affine, masks = volumes(flip_x)
    canvas = PreviewCanvas(background, affine, NAMES, "sub-01 - tract_segmentation (test)")
    for index in order:
        canvas.add_bundle(index, masks[index])
    return canvas


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, object]:
    canvas = canvas_for()
    path = canvas.save(tmp_path_factory.mktemp("preview") / "preview.png")
    _, layout = canvas.render()
    return path, np.asarray(Image.open(path).convert("RGB")), layout


def colour_mask(pixels: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return np.all(pixels[top:bottom, left:right] == np.array(colour, dtype=np.uint8), axis=-1)


def world_extent(index: int) -> np.ndarray:
    """(min, max) world mm of the outer voxel edges of bundle index's box, per world axis (independent of
    runtime.qc.preview: from the affine and voxel sizes only)."""
    corners = np.array([[b[0] for b in BOXES[index]], [b[1] - 1 for b in BOXES[index]]])
    world = nib.affines.apply_affine(AFFINE, corners)
    half = nib.affines.voxel_sizes(AFFINE) / 2
    return np.stack([world.min(axis=0) - half, world.max(axis=0) + half])


def test_picture_is_sane(rendered) -> None:
    path, pixels, layout = rendered
    assert path.stat().st_size < 1_000_000
    assert pixels.shape[:2] == (layout.size[1], layout.size[0])
    assert 600 <= layout.size[0] <= 3000 and 300 <= layout.size[1] <= 3000
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50       # grey background texture + colours + text
    assert list(layout.views) == ["axial", "coronal", "sagittal"]
    lefts = [box[0] for box in layout.views.values()]
    assert lefts == sorted(lefts)                                       # side by side, in that order


def test_views_have_anatomical_aspect(rendered) -> None:
    """Non-isotropic voxels are not squashed: each view's width/height equals its field of view in mm."""
    _, _, layout = rendered
    fov = np.array(SHAPE) * nib.affines.voxel_sizes(AFFINE)           # x 60, y 72, z 48 mm
    for name, (h_axis, v_axis) in {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}.items():
        left, top, right, bottom = layout.views[name]
        mm_per_pixel = fov[h_axis] / (right - left)
        assert (bottom - top) == pytest.approx(fov[v_axis] / mm_per_pixel, abs=1.0)


@pytest.mark.parametrize("view, h_axis, h_reversed, v_axis", [
    ("axial", 0, False, 1), ("coronal", 0, False, 2), ("sagittal", 1, True, 2)])
def test_bundles_project_where_their_masks_are(rendered, view: str, h_axis: int, h_reversed: bool,
                                               v_axis: int) -> None:
    """Neurological display: R on the right, A / S up; sagittal with A on the left. Each blob's colour covers
    exactly the rectangle its box projects to (within PIXEL_TOL) and appears nowhere else in that view."""
    _, pixels, layout = rendered
    box = layout.views[view]
    width, height = box[2] - box[0], box[3] - box[1]
    field = np.array([nib.affines.apply_affine(AFFINE, [0, 0, 0]),
                      nib.affines.apply_affine(AFFINE, np.array(SHAPE) - 1)])
    half = nib.affines.voxel_sizes(AFFINE) / 2
    lo, hi = field.min(axis=0) - half, field.max(axis=0) + half
    for index in (0, 1):
        found = colour_mask(pixels, box, bundle_colour(index))
        rows, cols = np.nonzero(found)
        assert rows.size, f"bundle {index} missing from the {view} view"
        extent = world_extent(index)
        scale_h = width / (hi[h_axis] - lo[h_axis])
        scale_v = height / (hi[v_axis] - lo[v_axis])
        if h_reversed:
            want_cols = ((hi[h_axis] - extent[1, h_axis]) * scale_h, (hi[h_axis] - extent[0, h_axis]) * scale_h)
        else:
            want_cols = ((extent[0, h_axis] - lo[h_axis]) * scale_h, (extent[1, h_axis] - lo[h_axis]) * scale_h)
        want_rows = ((hi[v_axis] - extent[1, v_axis]) * scale_v, (hi[v_axis] - extent[0, v_axis]) * scale_v)
        assert cols.min() == pytest.approx(want_cols[0], abs=PIXEL_TOL)
        assert cols.max() + 1 == pytest.approx(want_cols[1], abs=PIXEL_TOL)
        assert rows.min() == pytest.approx(want_rows[0], abs=PIXEL_TOL)
        assert rows.max() + 1 == pytest.approx(want_rows[1], abs=PIXEL_TOL)
    # The RAS blob is in the upper-right (axial, coronal) / upper-left (sagittal, anterior left) quadrant only.
    ras = colour_mask(pixels, box, bundle_colour(0))
    upper, right_half = ras[: height // 2], ras[:, width // 2:]
    assert not ras[height // 2 + 1:].any()
    assert upper.any()
    assert (not ras[:, width // 2 + 1:].any()) if h_reversed else (not ras[:, : width // 2 - 1].any())
    assert right_half.any() != h_reversed
    assert not colour_mask(pixels, box, bundle_colour(3)).any()        # never added: not drawn


def test_smaller_projection_drawn_on_top(rendered) -> None:
    """centre overlaps RAS_blob in the axial view; RAS_blob's projection is smaller, so it is on top."""
    _, pixels, layout = rendered
    box = layout.views["axial"]
    ras = colour_mask(pixels, box, bundle_colour(0))
    centre = colour_mask(pixels, box, bundle_colour(2))
    assert centre.any() and not (ras & centre).any()
    rows, cols = np.nonzero(ras)
    assert ras[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()   # RAS_blob's rectangle is whole


def test_legend_lists_every_bundle(rendered) -> None:
    _, pixels, layout = rendered
    assert [name for name, _, _ in layout.legend] == list(NAMES)
    views_bottom = max(box[3] for box in layout.views.values())
    colours = set()
    for index, (name, colour, (left, top, right, bottom)) in enumerate(layout.legend):
        assert colour == bundle_colour(index)
        assert top > views_bottom and right <= layout.size[0] and bottom <= layout.size[1]
        assert colour_mask(pixels, (left, top, right, bottom), colour).all(), f"swatch of {name}"
        colours.add(colour)
    assert len(colours) == len(NAMES)


def test_palette_is_distinct_and_never_grey() -> None:
    colours = [bundle_colour(i) for i in range(144)]
    assert len(set(colours)) == 144
    assert all(max(c) - min(c) >= 60 for c in colours)


def test_deterministic_order_independent_and_flip_invariant(rendered, tmp_path: Path) -> None:
    path, _, _ = rendered
    again = canvas_for().save(tmp_path / "again.png")
    reordered = canvas_for(order=(2, 0, 1)).save(tmp_path / "reordered.png")
    flipped = canvas_for(flip_x=True).save(tmp_path / "flipped.png")
    assert again.read_bytes() == path.read_bytes()
    assert reordered.read_bytes() == path.read_bytes()
    assert flipped.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.png", "flipped.png", "reordered.png"]


def test_hcp_size_72_bundles_under_1mb(tmp_path: Path) -> None:
    from runtime.models.bundles import TRACTQUERIER_BUNDLES
    shape = (145, 174, 145)
    rng = np.random.default_rng(0)
    background = rng.random(shape, dtype=np.float32)
    background[:10] = 0
    affine = np.diag([-1.25, 1.25, 1.25, 1.0])
    canvas = PreviewCanvas(background, affine, TRACTQUERIER_BUNDLES, "sub-01 - tract_segmentation")
    mask = np.zeros(shape, dtype=np.uint8)
    for index in range(len(TRACTQUERIER_BUNDLES)):
        mask[:] = 0
        corner = rng.integers(10, 100, size=3)
        mask[tuple(slice(c, c + int(rng.integers(5, 40))) for c in corner)] = 1
        canvas.add_bundle(index, mask)
    path = canvas.save(tmp_path / "preview.png")
    assert path.stat().st_size < 1_000_000
    picture = Image.open(path)
    assert picture.format == "PNG" and picture.mode == "RGB"
    assert not {"date", "Creation Time", "timestamp"} & set(picture.info)


def test_bad_input_and_missing_pillow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    canvas = canvas_for()
    with pytest.raises(ValueError, match="index"):
        canvas.add_bundle(len(NAMES), np.zeros(SHAPE, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        canvas.add_bundle(0, np.zeros((2, 2, 2), np.uint8))
    monkeypatch.setitem(sys.modules, "PIL", None)                       # as if Pillow were not installed
    with pytest.raises(RuntimeError) as raised:
        canvas.save(tmp_path / "preview.png")
    assert str(raised.value) == PILLOW_MISSING == "--preview needs Pillow: pip install 'tractseg-aot[qc]'"
    assert not list(tmp_path.iterdir())
