"""The one place where parsed command lines become typed options (:mod:`runtime.options`,
:class:`runtime.chain.ChainOptions`, :class:`runtime.cohort.StudyOptions`); usage errors go through the parser
(exit 2). Nothing past this module sees an argparse Namespace."""
from __future__ import annotations

import argparse
from typing import NoReturn

from runtime.chain import ChainOptions
from runtime.cohort import StudyOptions
from runtime.errors import InputError
from runtime.options import (BackendOptions, InferenceOptions, PreprocessOptions, QCOptions, RawInputOptions,
                             RunOptions, SaveOptions, UncertaintyOptions)
from runtime.tracking.api import TrackingOptions, parse_bundles


def input_path(p: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """PEAKS or ``-i PEAKS`` (exactly one of them)."""
    if args.peaks and args.input_flag and args.peaks != args.input_flag:
        p.error("give the input once: PEAKS or -i PEAKS")
    given = args.peaks or args.input_flag
    if not given:
        p.error("the input is required: PEAKS or -i PEAKS")
    return given


def backend_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> BackendOptions:
    if args.nr_cpus == 0 or args.nr_cpus < -1:
        p.error(f"--nr_cpus must be -1 or a positive number, not {args.nr_cpus}")
    return BackendOptions(backend=args.backend, device=args.device, precision=args.precision,
                          self_check=args.self_check, threads=None if args.nr_cpus == -1 else args.nr_cpus)


def raw_input_options(args: argparse.Namespace) -> RawInputOptions:
    return RawInputOptions(bvals=getattr(args, "bvals", None), bvecs=getattr(args, "bvecs", None),
                           brain_mask=getattr(args, "brain_mask", None), csd_type=args.csd_type,
                           keep_intermediate_files=args.keep_intermediate_files, peaks_engine=args.peaks_engine)


def run_options(p: argparse.ArgumentParser, args: argparse.Namespace, raw: bool | None = None) -> RunOptions:
    """The parsed run flags (:func:`runtime.cli.arguments.add_run_arguments`) as :class:`RunOptions`. ``raw``:
    the input is a DWI whatever the flags say (the BIDS App); None: ``--raw_diffusion_input`` decides."""
    raw = args.raw_diffusion_input if raw is None else raw
    if not args.preprocess and (args.mni_template or args.fa):
        p.error("--mni-template / --fa are for --preprocess")
    if not raw and any(getattr(args, name, None) is not None for name in ("bvals", "bvecs", "brain_mask")):
        p.error("--bvals / --bvecs / --brain_mask are for --raw_diffusion_input")
    if args.output_type in ("endings_segmentation", "TOM") and args.tract_definition == "xtract":
        p.error(f"--tract_definition xtract only works with --output_type tract_segmentation (as upstream), not "
                f"{args.output_type}")
    try:
        return RunOptions(output_type=args.output_type, tract_definition=args.tract_definition,
                          artifacts=args.artifacts, backend=backend_options(p, args),
                          save=SaveOptions(single_file=args.single_output_file, probabilities=args.get_probabilities,
                                           postprocess=not args.no_postprocess, rescale_dm=args.rescale_dm,
                                           tract_dir=args.tract_segmentation_output_dir, tom_dir=args.TOM_output_dir),
                          qc=QCOptions(statistics=args.statistics, preview=args.preview),
                          raw=raw_input_options(args) if raw else None,
                          tract_segmentations_path=args.tract_segmentations_path, force=args.force, quiet=args.quiet,
                          orientation=args.orientation,
                          preprocess=PreprocessOptions(args.mni_template, args.fa) if args.preprocess else None,
                          inference=inference_options(args))
    except ValueError as error:
        _usage(p, error)


def inference_options(args: argparse.Namespace) -> InferenceOptions:
    return InferenceOptions(single_orientation=args.single_orientation, super_resolution=args.super_resolution,
                            uncertainty=UncertaintyOptions(seed=args.seed) if args.uncertainty else None)


def chain_options(p: argparse.ArgumentParser, args: argparse.Namespace, backend: BackendOptions,
                  scalar_pattern: str | None = None) -> ChainOptions:
    """The parsed chain flags (:func:`runtime.cli.arguments.add_chain_arguments`) as :class:`ChainOptions`."""
    try:
        bundles = tuple(parse_bundles(args.bundles_string))
    except InputError as error:
        _usage(p, error)
    try:
        return ChainOptions(backend=backend, qc=QCOptions(statistics=args.statistics, preview=args.preview),
                            postprocess=not args.no_postprocess, force=args.force, quiet=args.quiet,
                            orientation=args.orientation,
                            tract_artifacts=args.tract_artifacts, endings_artifacts=args.endings_artifacts,
                            tom_artifacts=args.tom_artifacts, artifacts_root=args.artifacts_root, bundles=bundles,
                            tracking=TrackingOptions(args.nr_fibers, args.tracking_dilation, args.tracking_format,
                                                     args.seed),
                            nr_points=args.nr_points, scalar_pattern=scalar_pattern)
    except ValueError as error:
        _usage(p, error)


def study_options(p: argparse.ArgumentParser, args: argparse.Namespace,
                  per_subject: RunOptions | ChainOptions, pattern: str | None = None,
                  list_file: str | None = None) -> StudyOptions:
    """The parsed study flags (:func:`runtime.cli.arguments.add_study_arguments`) as :class:`StudyOptions`."""
    try:
        return StudyOptions(per_subject=per_subject, workers=args.workers, threads_per_worker=args.threads_per_worker,
                            scheduler=getattr(args, "scheduler", None), num_parts=args.num_parts,
                            part_id=args.part_id, **({"pattern": pattern} if pattern else {}), list_file=list_file)
    except ValueError as error:
        _usage(p, error)


def _usage(p: argparse.ArgumentParser, error: Exception) -> NoReturn:
    p.error(str(error))
