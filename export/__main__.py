"""python -m export: build a deployable bundle (StableHLO/IREE, SavedModel, ONNX + manifest) from TractSeg weights.

  python -m export --task tract_segmentation (--weights PATH | --download | --random-weights SEED) --out DIR
  python -m export --task TOM (--weights-dir DIR | --download | --random-weights SEED) --out DIR

TOM is one bundle of upstream's four part models; --weights-dir holds upstream's files under upstream's names
(pretrained_weights_peak_regression_part{1..4}_v2.npz; for the other tasks DIR/<upstream's local name>).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from export.bundle import FORMATS, PLATFORMS, ExportRequest
from export.conv_plan import CHOICES
from export.precisions import MIN_DICE
from runtime.models.bundles import TASKS, TRACT_DEFINITIONS, Model, model_for
from runtime.models.manifest import PRECISIONS, WeightsInfo


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.strip().splitlines()[0])
    p.add_argument("--task", choices=TASKS, default="tract_segmentation")
    p.add_argument("--tract_definition", choices=TRACT_DEFINITIONS, default="TractQuerier+")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path, help="upstream checkpoint (.npz torch pickle) or converted "
                                                     ".safetensors")
    source.add_argument("--weights-dir", type=Path, metavar="DIR",
                        help="folder with upstream's weights file(s) under upstream's names (TOM: the four parts)")
    source.add_argument("--download", action="store_true", help="fetch upstream's weights from Zenodo")
    source.add_argument("--random-weights", type=int, metavar="SEED",
                        help="seeded random weights: a DEMO, not anatomical")
    p.add_argument("--out", type=Path, help="bundle directory to write (default: the runtime's default location, "
                   "$TRACTSEG_AOT_ARTIFACTS/<model> or ~/.cache/tractseg-aot/<model>)")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma list of {FORMATS}")
    p.add_argument("--platforms", default=",".join(PLATFORMS), help=f"comma list of {PLATFORMS}")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--slice-size", type=int, default=144, help="144 in production; small sizes for tests")
    p.add_argument("--save-weights", type=Path, help="also write the weights as torch-free .safetensors")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--precisions", default="fp32",
                   help="comma list of fp32 (always built), bf16, int8, fp16: each made from the ONNX artifact, "
                        "measured against fp32 on these weights and shipped only above --min-dice")
    p.add_argument("--min-dice", type=float, default=MIN_DICE,
                   help="minimum Dice per bundle vs the fp32 masks on a full subject for a precision to ship")
    p.add_argument("--conv-algorithm", choices=CHOICES, default="direct",
                   help="how the 3x3 convolutions are written into the graph: direct, Winograd F(2x2,3x3) or "
                        "F(4x4,3x3) for every layer, or auto: per layer the fastest on this host's ONNX backends "
                        "(measured now), keeping the first plan within the drift gate (export/conv_plan.py)")
    p.add_argument("--drift-tolerance", type=float, default=None,
                   help="max abs probability drift of every artifact vs the live direct model (default 1e-5, the "
                        "exact path's gate; 1e-4 on the raw outputs of TOM / dm_regression; a looser value is for "
                        "measuring, e.g. winograd4, and is recorded)")
    args = p.parse_args(argv)
    if args.out is None:
        from runtime.checks.preflight import resolve_bundle_dir

        args.out = resolve_bundle_dir(None, model_for(args.task, args.tract_definition))
    args.precisions = tuple(dict.fromkeys(("fp32", *(f for f in args.precisions.split(",") if f))))
    bad = [x for x in args.precisions if x not in PRECISIONS]
    if bad:
        p.error(f"unknown precision {bad} (choose from {', '.join(PRECISIONS)})")
    args.formats = tuple(f for f in args.formats.split(",") if f)
    args.platforms = tuple(f for f in args.platforms.split(",") if f)
    for name, given, allowed in (("format", args.formats, FORMATS), ("platform", args.platforms, PLATFORMS)):
        bad = [g for g in given if g not in allowed]
        if bad or not given:
            p.error(f"unknown {name} {bad} (choose from {', '.join(allowed)})")
    return args


def load_network(args: argparse.Namespace, model: Model, seed_offset: int = 0) -> tuple[Any, WeightsInfo, dict]:
    """The live model, its weights' provenance for the manifest, and its state_dict (a TOM part: ``model`` is
    the part, demo weights use seed + its index)."""
    from export import weights as w

    if args.random_weights is not None:
        seed = args.random_weights + seed_offset
        state = w.random_state_dict(seed, model.n_classes)
        info = WeightsInfo(source=f"random (seed {seed}, He-scaled)", sha256=None, demo=True, seed=seed,
                           note="demo weights, NOT anatomical: outputs are not tract segmentations")
    else:
        path = args.weights
        if args.weights_dir is not None:
            path = args.weights_dir / model.local_name
        if args.download:
            from export.download import download_weights

            path = download_weights(model)
        if path.suffix == ".safetensors":
            state = w.load_weights_state_dict(path)
        else:
            state = w.read_upstream_state_dict(path)
        info = WeightsInfo(source=str(path), sha256=w.sha256_of(path), demo=False)
    return w.model_from_state_dict(state, info.source, model.upsample, model.linear), info, state


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from export.bundle import build_bundle
    from export.download import DownloadError
    from export.precisions import PrecisionError, check_requested
    from export.verify import DriftError, tolerance_for
    from runtime.errors import TractSegError
    from export.weights import WeightsError, save_weights

    try:
        check_requested(args.precisions, args.formats)
        model = model_for(args.task, args.tract_definition)
        request = ExportRequest(model=model, out=args.out, formats=args.formats, platforms=args.platforms,
                                batch_size=args.batch_size, slice_size=args.slice_size, force=args.force,
                                precisions=args.precisions, min_dice=args.min_dice,
                                conv_algorithm=args.conv_algorithm,
                                tolerance=tolerance_for(model.linear) if args.drift_tolerance is None
                                else args.drift_tolerance)
        if model.parts:
            return export_parts(args, request)
        network, weights_info, state = load_network(args, model)
        if args.save_weights:
            print(f"[export] weights saved to {args.save_weights} "
                  f"(sha256 {save_weights(state, args.save_weights)})")
        build_bundle(network, request, weights_info)
    except (WeightsError, DownloadError, DriftError, PrecisionError, TractSegError, ValueError, FileExistsError,
            OSError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 1
    return 0


def export_parts(args: argparse.Namespace, request: ExportRequest) -> int:
    """TOM: the part models' weights checked first (all four present and loadable: one line naming the file),
    then one bundle of all parts (export/parts.py), each part's live model built only when it is exported."""
    from export.parts import build_parts_bundle
    from export.weights import WeightsError

    if args.weights is not None:
        names = ", ".join(p.local_name for p in request.model.parts)
        raise WeightsError(f"--task {request.model.task} has {len(request.model.parts)} part models: give "
                           f"--weights-dir DIR with upstream's files ({names})")
    if args.save_weights:
        raise WeightsError("--save-weights is not supported for part models")
    if args.weights_dir is not None:
        missing = [args.weights_dir / p.local_name for p in request.model.parts
                   if not (args.weights_dir / p.local_name).is_file()]
        if missing:
            raise WeightsError(f"{missing[0]}: no such file (--weights-dir needs upstream's "
                               f"{len(request.model.parts)} part files under their upstream names)")
    loaded = [load_network(args, part, index)[:2] for index, part in enumerate(request.model.parts)]
    build_parts_bundle([lambda n=network: n for network, _ in loaded], request, [info for _, info in loaded])
    return 0


if __name__ == "__main__":
    sys.exit(main())
