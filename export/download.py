"""python -m export.download: fetch upstream TractSeg's pretrained weights from Zenodo (resumable, size checked,
sha256 recorded), into upstream's weights folder.

The download itself is :mod:`runtime.weights.download` (moved there so that a deploy install, with no export
toolchain, downloads with the same code: ``python -m runtime.weights``); its names are re-exported here.

CLI: python -m export.download [--task T] [--tract_definition D] [--all] [--dest DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.models.bundles import MODELS, TASKS, TRACT_DEFINITIONS, model_for
from runtime.weights.download import (  # noqa: F401  (re-exported: export/__main__.py and the tests use them)
    BASE_URL_ENV, CHUNK_BYTES, DEFAULT_BASE_URL, TIMEOUT_S, WEIGHTS_DIR_ENV, DownloadError, _one_line,
    download_weights, recorded_sha256, sha256_path, weights_dir, zenodo_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.download", description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="tract_segmentation")
    parser.add_argument("--tract_definition", choices=TRACT_DEFINITIONS, default="TractQuerier+")
    parser.add_argument("--all", action="store_true", help="every upstream weights file (TOM: four)")
    parser.add_argument("--dest", type=Path, default=None, help="directory (default: upstream's weights dir)")
    args = parser.parse_args(argv)
    try:
        chosen = model_for(args.task, args.tract_definition)
        models = MODELS if args.all else chosen.parts or (chosen,)
        for model in models:
            path = download_weights(model, args.dest)
            print(f"{recorded_sha256(path)}  {path}")
    except (DownloadError, ValueError, OSError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
