"""Every flag of the command lines, declared once, in groups that each command composes (DIPY's workflows declare
a flag once too): ``tractseg-aot`` takes them all, the study runner and the BIDS App add their own, the chain
takes the network's and its own. :mod:`runtime.cli.options` turns the parsed groups into typed options."""
from __future__ import annotations

import argparse

from runtime.cli import path_arg
from runtime.models.bundles import TASKS, TRACT_DEFINITIONS
from runtime.models.manifest_schema import PRECISIONS
from runtime.network.backends import BACKENDS
from runtime.options import CSD_TYPES, ORIENTATION_MODES, PEAKS_ENGINES
from runtime.tracking.api import DEFAULT_SEED
from runtime.tracking.writers import FORMATS


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """PEAKS (or upstream's ``-i PEAKS``) and ``-o OUTDIR``, as upstream's TractSeg takes them."""
    p.add_argument("peaks", metavar="PEAKS", type=path_arg, nargs="?",
                   help="MRtrix peaks: 4D NIfTI (X, Y, Z, 9); or a DWI with --raw_diffusion_input")
    p.add_argument("-i", dest="input_flag", metavar="PEAKS", type=path_arg,
                   help="the same as PEAKS (upstream's spelling)")
    p.add_argument("-o", dest="output", metavar="OUTDIR", type=path_arg,
                   help="output directory (default: <directory of PEAKS>/tractseg_output)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which model, from which bundle folder."""
    p.add_argument("--artifacts", metavar="DIR", type=path_arg, help="bundle directory with manifest.json "
                   "(default: $TRACTSEG_AOT_ARTIFACTS[/<model>], else ~/.cache/tractseg-aot/<model>)")
    p.add_argument("--output_type", choices=TASKS, default="tract_segmentation")
    p.add_argument("--tract_definition", choices=TRACT_DEFINITIONS, default="TractQuerier+")
    p.add_argument("--tract_segmentations_path", metavar="DIR", type=path_arg,
                   help="TOM: the bundle masks (default: <output>/bundle_segmentations, from a tract_segmentation "
                        "run)")
    add_orientation_argument(p)
    p.add_argument("--flip", action="store_true",
                   help="accepted for upstream's command lines and, as upstream 2.10 does, not applied (its "
                        "Config.FLIP_OUTPUT_PEAKS is never read): TOMs are written unchanged")


def add_orientation_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--orientation", choices=ORIENTATION_MODES, default="check",
                   help="check the peaks for a flipped axis before the network: check (default: warn), fix (undo "
                        "a confident flip), off")


def add_preprocess_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--preprocess: the run in MNI space (upstream's, without FSL; runtime.preprocess)")
    g.add_argument("--preprocess", action="store_true",
                   help="register the subject rigidly to upstream's MNI FA template, run there, and bring every "
                        "output back to the input's grid (needs the [diffusion] extra: dipy)")
    g.add_argument("--mni-template", dest="mni_template", metavar="FILE", type=path_arg,
                   help="the MNI FA template (default: the installed TractSeg's, else the per-user cache's)")
    g.add_argument("--fa", metavar="FILE", type=path_arg,
                   help="an FA map on the peaks' grid to register (default: the first-peak length)")


def add_save_arguments(p: argparse.ArgumentParser) -> None:
    """What is written, in upstream's layout."""
    p.add_argument("--single_output_file", action="store_true", help="all bundles in one 4D image (not for TOM)")
    p.add_argument("--rescale_dm", action="store_true",
                   help="dm_regression: min-max scale the density maps over all bundles, as upstream (whose "
                        "range(0, 100) gives [0, 1])")
    p.add_argument("--tract_segmentation_output_dir", metavar="folder_name", default="bundle_segmentations",
                   help="name of the bundle segmentations folder (default: bundle_segmentations)")
    p.add_argument("--TOM_output_dir", metavar="folder_name", default="TOM",
                   help="name of the TOM folder (default: TOM)")
    p.add_argument("--get_probabilities", action="store_true",
                   help="float32 probabilities instead of masks (no post-processing)")
    add_postprocess_argument(p)


def add_postprocess_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no_postprocess", action="store_true", help="keep small blobs (tract_segmentation)")


def add_backend_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """How the network runs."""
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32: the exact path (default); bf16/int8/fp16: faster, with the loss the export measured "
                        "and recorded in the bundle (an error where the bundle or the host lacks it)")
    p.add_argument("--no-self-check", dest="self_check", action="store_false",
                   help="skip the bundle's check batch run when the backend opens (one batch)")
    p.add_argument("--nr_cpus", type=int, default=-1, metavar="N",
                   help="threads for the backend (-1: its default; capped at the cores available)")


def add_qc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--statistics", action="store_true", help="also write statistics.json (per-bundle volume, ...)")
    p.add_argument("--preview", action="store_true", help="also write preview.png (needs the [qc] extra)")


def add_raw_input_arguments(p: argparse.ArgumentParser, flag: bool = True, files: bool = True) -> None:
    """A DWI series as input (upstream's --raw_diffusion_input). ``flag``: offer the switch itself (the BIDS App
    always takes DWIs); ``files``: offer --bvals / --bvecs / --brain_mask (a study finds each subject's own)."""
    g = p.add_argument_group("raw diffusion input (upstream's --raw_diffusion_input; runtime.diffusion)")
    if flag:
        g.add_argument("--raw_diffusion_input", action="store_true",
                       help="the input is a DWI series: compute the peaks first (MRtrix CSD as upstream, or dipy)")
    if files:
        g.add_argument("--bvals", metavar="FILE", type=path_arg, help="default: <input name>.bvals beside the input")
        g.add_argument("--bvecs", metavar="FILE", type=path_arg, help="default: <input name>.bvecs beside the input")
        g.add_argument("--brain_mask", metavar="FILE", type=path_arg,
                       help="default: nodif_brain_mask.nii.gz beside the input, else the engine makes one")
    g.add_argument("--csd_type", choices=CSD_TYPES, default="csd")
    g.add_argument("--keep_intermediate_files", action="store_true", help="keep the FODs, response, ...")
    g.add_argument("--peaks-engine", dest="peaks_engine", choices=PEAKS_ENGINES, default="auto",
                   help="auto: MRtrix when dwi2fod is on PATH, else dipy (the [diffusion] extra)")


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines")


def add_run_arguments(p: argparse.ArgumentParser, raw_flag: bool = True, raw_files: bool = True) -> None:
    """Everything one subject's run takes (``tractseg-aot``; the study runner and the BIDS App per subject)."""
    add_model_arguments(p)
    add_save_arguments(p)
    add_inference_arguments(p)
    add_preprocess_arguments(p)
    add_backend_arguments(p)
    add_qc_arguments(p)
    add_raw_input_arguments(p, raw_flag, raw_files)
    add_common_arguments(p)


def add_chain_arguments(p: argparse.ArgumentParser, tracking_format: bool = True) -> None:
    """Where the chain's three bundles are, and upstream ``Tracking`` / ``Tractometry``'s options
    (``tracking_format``: offer ``--tracking_format``; the BIDS App writes TRX only)."""
    g = p.add_argument_group("the chain's bundles (each: its own option, else ARTIFACTS_ROOT/<model>, else "
                             "$TRACTSEG_AOT_ARTIFACTS/<model>, else ~/.cache/tractseg-aot/<model>)")
    g.add_argument("--artifacts-root", dest="artifacts_root", metavar="DIR", type=path_arg,
                   help="folder holding tract_segmentation/, endings_segmentation/ and TOM/ bundles")
    g.add_argument("--tract-artifacts", dest="tract_artifacts", metavar="DIR", type=path_arg)
    g.add_argument("--endings-artifacts", dest="endings_artifacts", metavar="DIR", type=path_arg)
    g.add_argument("--tom-artifacts", dest="tom_artifacts", metavar="DIR", type=path_arg)
    t = p.add_argument_group("tracking and tractometry (upstream Tracking / Tractometry)")
    add_bundles_argument(t, "bundles to track and profile (default: all 72; Tractometry profiles its 50 of them)")
    add_tracking_arguments(t, tracking_format)
    t.add_argument("--nr_points", metavar="N", type=int, default=100, help="points along each bundle (default 100)")


def add_bundles_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, text: str) -> None:
    p.add_argument("--bundles", metavar="A,B,C", dest="bundles_string", default="all", help=text)


def add_tracking_format_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--tracking_format", metavar="|".join(FORMATS), choices=list(FORMATS), default="tck",
                   help="the tractograms' format (default: tck, as upstream)")


def add_tracking_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup,
                           tracking_format: bool = True) -> None:
    """upstream ``Tracking``'s shared flags and defaults, plus ``--seed`` (and ``--tracking_format``)."""
    p.add_argument("--nr_fibers", metavar="N", type=int, default=2000, help="streamlines per bundle (default 2000)")
    if tracking_format:
        add_tracking_format_argument(p)
    p.add_argument("--tracking_dilation", metavar="N", type=int, default=0,
                   help="dilate the bundle mask by N voxels and the endpoint masks by N+1 (default: 0, as upstream)")
    add_seed_argument(p)


def add_seed_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--seed``, once per command line: tracking's seeds and ``--uncertainty``'s dropout masks."""
    if "--seed" not in p._option_string_actions:
        p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help=f"random seed of tracking and of --uncertainty's dropout masks (default {DEFAULT_SEED}); "
                            "recorded in each tractogram's sidecar and the run report")


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """upstream's other ways to run the network."""
    g = p.add_argument_group("how the network runs (upstream's options)")
    g.add_argument("--single_orientation", action="store_true",
                   help="the y slices only, no mean over three orientations: about 3x faster, masks differ")
    g.add_argument("--super_resolution", action="store_true",
                   help="keep the model's 1.25 mm grid instead of going back to the input's resolution (needs dipy)")
    g.add_argument("--uncertainty", action="store_true",
                   help="uncertainty maps by Monte Carlo dropout (30 runs per slice, --seed): tract_segmentation "
                        "only, written to bundle_uncertainties")
    add_seed_argument(g)


def add_study_arguments(p: argparse.ArgumentParser, scheduler: bool = True) -> None:
    """How a study runs: workers, threads, a Dask cluster, job-array parts."""
    g = p.add_argument_group("how the study runs (runtime.cohort)")
    g.add_argument("--workers", type=int, metavar="N", help="worker processes (default: from cores and memory; "
                   "0 runs every subject in this process, without Dask)")
    g.add_argument("--threads-per-worker", type=int, metavar="T",
                   help="backend threads per worker (default: the cores, at most 8)")
    if scheduler:
        g.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster (tcp://host:8786)")
    g.add_argument("--num-parts", type=int, default=1, metavar="N", help="split the study into N parts (job arrays: "
                   "parts may run at the same time on one output folder; a later plain run merges them)")
    g.add_argument("--part-id", type=int, default=0, metavar="K", help="run part K (0 .. N-1)")
