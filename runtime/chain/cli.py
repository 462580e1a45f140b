"""The chain's command-line options, shared by ``python -m runtime.chain`` and ``python -m runtime.cohort --chain``,
and their one mapping to :class:`runtime.chain.options.ChainOptions`."""
from __future__ import annotations

import argparse

from runtime.chain.options import ChainOptions
from runtime.cli import path_arg
from runtime.errors import InputError
from runtime.options import RunOptions
from runtime.tracking.api import DEFAULT_SEED, TrackingOptions, parse_bundles
from runtime.tracking.writers import FORMATS


def add_chain_arguments(p: argparse.ArgumentParser) -> None:
    """Where the three bundles are, and upstream ``Tracking`` / ``Tractometry``'s options with their defaults."""
    g = p.add_argument_group("the chain's bundles (each: its own option, else ARTIFACTS_ROOT/<model>, else "
                             "$TRACTSEG_AOT_ARTIFACTS/<model>, else ~/.cache/tractseg-aot/<model>)")
    g.add_argument("--artifacts-root", dest="artifacts_root", metavar="DIR", type=path_arg,
                   help="folder holding tract_segmentation/, endings_segmentation/ and TOM/ bundles")
    g.add_argument("--tract-artifacts", dest="tract_artifacts", metavar="DIR", type=path_arg)
    g.add_argument("--endings-artifacts", dest="endings_artifacts", metavar="DIR", type=path_arg)
    g.add_argument("--tom-artifacts", dest="tom_artifacts", metavar="DIR", type=path_arg)
    t = p.add_argument_group("tracking and tractometry (upstream Tracking / Tractometry)")
    t.add_argument("--bundles", metavar="A,B,C", dest="bundles_string", default="all",
                   help="bundles to track and profile (default: all 72; Tractometry profiles its 50 of them)")
    t.add_argument("--nr_fibers", metavar="N", type=int, default=2000, help="streamlines per bundle (default 2000)")
    t.add_argument("--tracking_format", choices=list(FORMATS), default="tck", help="default: tck, as upstream")
    t.add_argument("--tracking_dilation", metavar="N", type=int, default=0, help="default: 0, as upstream")
    t.add_argument("--nr_points", metavar="N", type=int, default=100, help="points along each bundle (default 100)")
    t.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"tracking seed (default {DEFAULT_SEED})")


def chain_options(p: argparse.ArgumentParser, args: argparse.Namespace, run: RunOptions,
                  scalar_pattern: str | None = None) -> ChainOptions:
    """The parsed chain options (usage errors through ``p``, exit 2)."""
    try:
        bundles = tuple(parse_bundles(args.bundles_string))
    except InputError as error:
        p.error(str(error))
    try:
        return ChainOptions(run=run, tract_artifacts=args.tract_artifacts, endings_artifacts=args.endings_artifacts,
                            tom_artifacts=args.tom_artifacts, artifacts_root=args.artifacts_root, bundles=bundles,
                            tracking=TrackingOptions(args.nr_fibers, args.tracking_dilation, args.tracking_format,
                                                     args.seed),
                            nr_points=args.nr_points, scalar_pattern=scalar_pattern)
    except ValueError as error:
        p.error(str(error))
