"""The verdict of an orientation check, as a frozen dataclass with a JSON form and a one-line summary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FLIPS = ("none", "x", "y", "z")


@dataclass(frozen=True)
class OrientationResult:
    """Which reading of the directions is the most coherent, and how clearly.

    ``flip``: the reading with the highest score, "none" (the directions as given) or the axis whose sign flip
    makes the field most coherent. ``scores``: the coherence score of every reading (mean |cos| between a voxel's
    main direction and the directions of the voxels it points at; see :mod:`runtime.orientation.coherence`).
    ``margin``: best score minus the runner-up's. ``confident``: the margin clears both calibrated thresholds
    (absolute and in standard errors); without it the check has no verdict, whatever ``flip`` says.

    ``z``: the margin in standard errors (block jackknife over ~25 mm blocks); ``voxels``: the voxels scored;
    ``frame``: "world" (a peaks check: the flip negates that world component of every peak) or "bvecs" (a
    b-vector check: the flip negates that row of the FSL bvecs file); ``seconds``: the check's run time.
    """

    flip: str
    scores: dict[str, float]
    margin: float
    confident: bool
    z: float = 0.0
    voxels: int = 0
    frame: str = "world"
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {"flip": self.flip, "scores": {k: round(float(v), 5) for k, v in self.scores.items()},
                "margin": round(float(self.margin), 5), "confident": bool(self.confident), "z": round(float(self.z), 2),
                "voxels": int(self.voxels), "frame": self.frame, "seconds": round(float(self.seconds), 3),
                "notes": list(self.notes)}

    @property
    def flipped(self) -> bool:
        """True only for a confident verdict that an axis is flipped: the case a runner should warn about."""
        return self.confident and self.flip != "none"

    def summary(self) -> str:
        """One line for people."""
        scores = ", ".join(f"{name} {self.scores[name]:.3f}" for name in FLIPS if name in self.scores)
        detail = f"scores {scores}; margin {self.margin:.3f} ({self.z:.1f} SE), {self.voxels} voxels"
        if not self.confident:
            return f"no confident verdict (best: {self.flip}; {detail})"
        if self.flip == "none":
            return f"orientation looks right ({detail})"
        if self.frame == "bvecs":
            row = "xyz".index(self.flip) + 1
            return (f"b-vector axis {self.flip} looks flipped: negate row {row} of the bvecs file ({detail})")
        return f"peak axis {self.flip} looks flipped: negate the world {self.flip} component of every peak ({detail})"
