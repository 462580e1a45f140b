"""Finding each participant's (and session's) DWI, bval, bvec and optional brain mask in a BIDS dataset.

Rules (BIDS 1.10, "Magnetic Resonance Imaging > Diffusion imaging" and "Common principles > The inheritance
principle"):

- A DWI is ``sub-<p>[/ses-<s>]/dwi/sub-<p>[_ses-<s>][_<other entities>]_dwi.nii[.gz]``; its name's ``sub``/``ses``
  entities must equal its folders'.
- Its ``.bval``/``.bvec`` is the file with the same name and that extension; failing that, by the inheritance
  principle, the nearest ``[<entities>_]dwi.bval``/``.bvec`` in the session, subject or dataset folder whose entities
  are all among the DWI's (the most specific wins; two equally specific ones are an error).
- Brain mask (our rule; raw BIDS has no masks): in ``<bids>/derivatives/<pipeline>/`` at the DWI's own
  ``sub-<p>[/ses-<s>]/dwi/`` path, a ``..._desc-brain_mask.nii[.gz]`` whose entities are the DWI's own (less the
  suffix) plus ``desc-brain`` and at most ``space-orig`` or ``space-dwi`` (a mask on the DWI grid). None found: no
  mask (the peaks engine makes one); more than one: an error naming them.
- Scalar map for tractometry (our rule, :func:`find_scalar_map`; BEP016's parameter-map name): in the same
  ``derivatives/<pipeline>/`` folders, a ``..._model-<any>_param-<param>_dwimap.nii[.gz]`` whose entities are the
  DWI's own plus ``model``, ``param`` and at most ``space-orig`` or ``space-dwi``; exactly one, else an error.
- ``participant_labels`` / ``session_labels`` take labels with or without ``sub-`` / ``ses-``; a label that is not
  in the dataset is one :class:`InputError` line listing those that are.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import InputError

ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9]+)$")
DWI_SUFFIXES = ("_dwi.nii.gz", "_dwi.nii")
MASK_SPACES = (None, "orig", "dwi")


def parse_name(name: str) -> tuple[dict[str, str], str] | None:
    """``sub-01_ses-1_run-2_dwi.nii.gz`` -> ({"sub": "01", "ses": "1", "run": "2"}, "dwi"); None if not BIDS-like."""
    stem = name.split(".", 1)[0]
    parts = stem.split("_")
    entities: dict[str, str] = {}
    for part in parts[:-1]:
        match = ENTITY.match(part)
        if match is None or match.group(1) in entities:
            return None
        entities[match.group(1)] = match.group(2)
    return entities, parts[-1]


@dataclass(frozen=True)
class BidsDwi:
    """One diffusion series of one participant (and session): the inputs of one subject run."""

    participant: str
    session: str | None
    dwi: Path
    bval: Path
    bvec: Path
    brain_mask: Path | None
    entities: dict[str, str] = field(default_factory=dict)  # the DWI's, in file-name order, suffix excluded
    problem: str | None = None  # why this series cannot run (no .bval, two masks...): it fails alone, one line

    @property
    def name(self) -> str:
        """``sub-01_ses-1_run-1``: the source entities, the prefix of every derivative name."""
        return "_".join(f"{k}-{v}" for k, v in self.entities.items())

    def output_dir(self, out_root: Path) -> Path:
        """``<out>/sub-<p>[/ses-<s>]/dwi`` (BIDS derivatives keep the raw layout)."""
        folder = Path(out_root) / f"sub-{self.participant}"
        return (folder / f"ses-{self.session}" if self.session else folder) / "dwi"


def _strip(label: str, prefix: str) -> str:
    return label[len(prefix):] if label.startswith(prefix) else label


def _select(found: list[str], wanted: Sequence[str] | None, prefix: str, where: Path) -> list[str]:
    if not wanted:
        return found
    labels = [_strip(w, prefix) for w in wanted]
    unknown = [w for w in labels if w not in found]
    if unknown:
        raise InputError(f"{where}: no {prefix}{unknown[0]} ({prefix.rstrip('-')} labels here: "
                         f"{', '.join(found) or 'none'})")
    return sorted(set(labels), key=labels.index)


def _gradient_file(dwi: Path, entities: dict[str, str], extension: str, folders: list[Path]) -> Path:
    exact = dwi.parent / (dwi.name.split(".", 1)[0] + extension)
    if exact.is_file():
        return exact
    for folder in folders:
        candidates = []
        for path in sorted(folder.glob(f"*dwi{extension}")):
            parsed = parse_name(path.name)
            if parsed and parsed[1] == "dwi" and all(entities.get(k) == v for k, v in parsed[0].items()):
                candidates.append((len(parsed[0]), path))
        if candidates:
            best = max(n for n, _ in candidates)
            chosen = [p for n, p in candidates if n == best]
            if len(chosen) > 1:
                raise InputError(f"{dwi}: {extension} is ambiguous by inheritance: "
                                 f"{', '.join(p.name for p in chosen)}")
            return chosen[0]
    raise InputError(f"{dwi}: no {extension} file (neither {exact.name} nor an inherited dwi{extension})")


def _derivatives(bids_dir: Path, relative: Path, entities: dict[str, str], suffix: str,
                 wanted: Callable[[dict[str, str]], bool]) -> list[Path]:
    """The ``*_<suffix>.nii[.gz]`` files at ``relative`` in every ``<bids>/derivatives/<pipeline>/`` whose entities
    are the DWI's own plus at most ``space-orig|dwi`` (on the DWI's grid) and extras that ``wanted`` accepts."""
    found = []
    derivatives = bids_dir / "derivatives"
    for pipeline in sorted(p for p in derivatives.iterdir() if p.is_dir()) if derivatives.is_dir() else []:
        folder = pipeline / relative
        for path in sorted(folder.glob(f"*_{suffix}.nii*")) if folder.is_dir() else []:
            parsed = parse_name(path.name)
            if not parsed or parsed[1] != suffix or not path.name.endswith((".nii", ".nii.gz")):
                continue
            extra = {k: v for k, v in parsed[0].items() if k not in entities}
            same = all(parsed[0].get(k) == v for k, v in entities.items())
            if same and extra.pop("space", None) in MASK_SPACES and wanted(extra):
                found.append(path)
    return found


def _brain_mask(bids_dir: Path, relative: Path, entities: dict[str, str], dwi: Path) -> Path | None:
    found = _derivatives(bids_dir, relative, entities, "mask", lambda extra: extra == {"desc": "brain"})
    if len(found) > 1:
        raise InputError(f"{dwi}: more than one brain mask in derivatives/: {', '.join(str(p) for p in found)}")
    return found[0] if found else None


def _series(root: Path, relative: Path, participant: str, session: str | None, dwi: Path,
            entities: dict[str, str], folders: list[Path]) -> BidsDwi:
    """One series; a missing or ambiguous bval/bvec/mask is kept as its ``problem`` (that series fails alone in
    the study's table, the others run)."""
    exact = dwi.parent / dwi.name.split(".", 1)[0]
    try:
        return BidsDwi(participant, session, dwi, _gradient_file(dwi, entities, ".bval", folders),
                       _gradient_file(dwi, entities, ".bvec", folders), _brain_mask(root, relative, entities, dwi),
                       entities)
    except InputError as problem:
        return BidsDwi(participant, session, dwi, exact.with_name(exact.name + ".bval"),
                       exact.with_name(exact.name + ".bvec"), None, entities, str(problem))


def find_dwis(bids_dir: str | Path, participant_labels: Sequence[str] | None = None,
              session_labels: Sequence[str] | None = None, *, require_description: bool = True) -> list[BidsDwi]:
    """Every DWI of the selected participants and sessions, sorted by participant, session, name. Raises
    InputError (one line) for a missing dataset, an unknown label, and when nothing is found; a DWI without
    bval/bvec (or with two masks) is returned with its ``problem``."""
    root = Path(bids_dir)
    if not root.is_dir():
        raise InputError(f"{root}: BIDS folder not found")
    if require_description and not (root / "dataset_description.json").is_file():
        raise InputError(f"{root}: no dataset_description.json: not a BIDS dataset (or pass "
                         f"--skip-bids-validation)")
    subjects = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir() and ENTITY.match(p.name))
    chosen = _select(subjects, participant_labels, "sub-", root)
    all_sessions = {s: sorted(p.name[4:] for p in (root / f"sub-{s}").glob("ses-*") if p.is_dir()) for s in chosen}
    known_sessions = sorted({x for v in all_sessions.values() for x in v})
    wanted_sessions = _select(known_sessions, session_labels, "ses-", root) if session_labels else None
    found: list[BidsDwi] = []
    for participant in chosen:
        sessions: list[str | None] = list(all_sessions[participant]) or [None]
        if wanted_sessions is not None:
            sessions = [s for s in sessions if s in wanted_sessions]
        for session in sessions:
            relative = Path(f"sub-{participant}") / (f"ses-{session}" if session else "") / "dwi"
            for dwi in sorted((root / relative).glob("*_dwi.nii*")):
                parsed = parse_name(dwi.name)
                if not dwi.name.endswith(DWI_SUFFIXES) or parsed is None:
                    continue
                entities = parsed[0]
                if entities.get("sub") != participant or entities.get("ses") != session:
                    raise InputError(f"{dwi}: its name's sub/ses entities do not match its folder")
                folders = [root / relative.parent] + ([root / f"sub-{participant}"] if session else []) + [root]
                found.append(_series(root, relative, participant, session, dwi, entities, folders))
    if not found:
        raise InputError(f"{root}: no sub-*/[ses-*/]dwi/*_dwi.nii[.gz] for the selected participants")
    return found


def find_scalar_map(bids_dir: str | Path, series: BidsDwi, param: str) -> Path:
    """The series' scalar map ``..._model-<m>_param-<param>_dwimap.nii[.gz]`` (module docstring); InputError (one
    line) when there is none or more than one."""
    relative = series.output_dir(Path())  # sub-<p>[/ses-<s>]/dwi
    found = _derivatives(Path(bids_dir), relative, series.entities, "dwimap",
                         lambda extra: set(extra) == {"model", "param"} and extra["param"] == param)
    if len(found) != 1:
        what = f"{len(found)} scalar maps ({', '.join(str(p) for p in found)})" if found else "no scalar map"
        raise InputError(f"{series.dwi}: {what} {series.name}[_space-orig]_model-<model>_param-{param}_dwimap"
                         f".nii[.gz] in {Path(bids_dir) / 'derivatives'}/*/{relative.as_posix()}/; exactly one "
                         f"is needed")
    return found[0]
