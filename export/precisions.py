"""`python -m export --precisions`: bf16, int8 and fp16 artifacts made from the bundle's fp32 ONNX, each measured
against fp32 on the weights at hand and gated before it ships.

- bf16: the same model.onnx run by OpenVINO with bf16 inference precision (ONNX Runtime has no x86 bf16 path).
  Its loss can only be measured on a CPU that computes bf16 natively (AVX512_BF16 or AMX): elsewhere the export
  refuses to build it.
- int8: static post-training quantization with ONNX Runtime's quantizer (quant_pre_process, then QDQ with
  per-channel int8 weights, uint8 activations, MinMax calibration on real-looking slices: the example peaks when
  present, else synthetic ones; which is recorded). Runs on ONNX Runtime and OpenVINO.
- fp16: ONNX Runtime's fp16 converter with float32 inputs/outputs and the per-slice normalisation kept in float32
  (its sums over 9*S*S values overflow fp16); for CUDA, verified here on the CPU with ONNX Runtime.
  (onnxconverter-common 1.16's converter gave max abs drift 0.64 on this graph even with only the convolutions
  converted; ONNX Runtime's own copy gave 2.3e-3.)

Every (artifact, backend) gets its drift on the check slices and the Dice per bundle of its final masks against
the fp32 masks on a full subject (min, mean, worst bundle). A backend below `min_dice` is dropped; a precision
with no backend left fails the export with one line naming the precision and the worst bundle.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from export.manifest_writer import file_entries
from export.onnx_model import ONNX_FILE
from export.sample_inputs import EXAMPLE_PEAKS, calibration_batches
from export.verify import measure_drift, runner
from runtime.models.manifest import Artifact, Manifest, host_cpu_flags
from runtime.network.precision import BF16_CPU_FLAGS

INT8_FILE, FP16_FILE = "model.int8.onnx", "model.fp16.onnx"
MIN_DICE = 0.97


class PrecisionError(RuntimeError):
    """A requested precision that cannot be built here or falls below the Dice gate (one line)."""


def check_requested(precisions: tuple[str, ...], formats: tuple[str, ...]) -> None:
    """Refuse, before any work, what this export cannot build or measure."""
    if set(precisions) - {"fp32"} and "onnx" not in formats:
        raise PrecisionError("--precisions beyond fp32 are made from the ONNX artifact: add onnx to --formats")
    if "bf16" in precisions and not host_cpu_flags() & BF16_CPU_FLAGS:
        raise PrecisionError("bf16: its loss must be measured on a CPU that computes bf16 natively (AVX512_BF16 or "
                             "AMX); this export host has neither")


def bf16_artifact(work: Path, calibration: dict) -> Artifact:
    return Artifact("onnx-bf16", "onnx", ONNX_FILE, ("cpu",), ("openvino",), (ONNX_FILE,),
                    details={"inference_precision": "bf16"}, precision="bf16")


def int8_artifact(work: Path, calibration: dict) -> Artifact:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration["batches"])

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"slices": batch}

    prepared = work / "model.int8-prepared.onnx"
    try:
        quant_pre_process(str(work / ONNX_FILE), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(work / INT8_FILE), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "ConvTranspose"])
    finally:
        prepared.unlink(missing_ok=True)
    method = ("onnxruntime quantize_static: QDQ, per-channel int8 weights, uint8 activations, MinMax, "
              "Conv/ConvTranspose")
    return Artifact("onnx-int8", "onnx", INT8_FILE, ("cpu",), ("onnxruntime", "openvino"), (INT8_FILE,),
                    details={"method": method, "calibration": calibration["source"]}, precision="int8")


def fp16_artifact(work: Path, calibration: dict) -> Artifact:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(work / ONNX_FILE))
    first_conv = next(i for i, node in enumerate(model.graph.node) if node.op_type == "Conv")
    kept = [node.name for node in model.graph.node[:first_conv]]  # the normalisation stays float32
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=kept)
    names: set[str] = set()
    for index, node in enumerate(converted.graph.node):  # onnxruntime 1.30's converter repeats its Cast names
        if node.name in names:
            node.name = f"{node.name}_{index}"
        names.add(node.name)
    onnx.save(converted, str(work / FP16_FILE))
    return Artifact("onnx-fp16", "onnx", FP16_FILE, ("cuda",), ("onnxruntime",), (FP16_FILE,),
                    details={"converter": "onnxruntime.transformers.float16", "float32_nodes": len(kept)},
                    precision="fp16")


MAKERS: dict[str, Callable[[Path, dict], Artifact]] = {"bf16": bf16_artifact, "int8": int8_artifact,
                                                       "fp16": fp16_artifact}


def dice_per_bundle(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Dice of each bundle's mask (C, X, Y, Z); 1 where both are empty."""
    got, ref = got.reshape(len(got), -1).astype(bool), ref.reshape(len(ref), -1).astype(bool)
    overlap = (got & ref).sum(1)
    total = got.sum(1) + ref.sum(1)
    return np.where(total > 0, 2 * overlap / np.maximum(total, 1), 1.0)


def subject_masks(manifest: Manifest, artifact: Artifact, loaded, subject) -> np.ndarray:
    """The final masks of a full subject through the runtime's pipeline, on an artifact already loaded."""
    from runtime.models.bundles import model_for
    from runtime.pipeline import TractSegPipeline

    model = model_for(manifest.task, manifest.tract_definition)
    return TractSegPipeline(model, manifest, artifact, loaded, None).predict(subject).masks()


def fidelity(manifest: Manifest, artifact: Artifact, loaded, subject, reference: np.ndarray,
             subject_name: str) -> dict:
    dice = dice_per_bundle(subject_masks(manifest, artifact, loaded, subject), reference)
    worst = int(np.argmin(dice))
    return {"dice_min": float(dice[worst]), "dice_mean": float(dice.mean()),
            "worst_bundle": manifest.bundles[worst], "subject": subject_name}


def gate(artifact: Artifact, results: dict[str, dict], min_dice: float) -> Artifact:
    """Keep the backends at or above min_dice; PrecisionError when none is."""
    passed = tuple(b for b in artifact.backends if results[b]["dice"]["dice_min"] >= min_dice)
    if not passed:
        worst = min(results.values(), key=lambda r: r["dice"]["dice_min"])["dice"]
        raise PrecisionError(f"{artifact.precision}: min bundle Dice vs fp32 {worst['dice_min']:.4f} "
                             f"({worst['worst_bundle']}) is below --min-dice {min_dice} on "
                             f"{', '.join(artifact.backends)}; not exported")
    return replace(artifact, backends=passed, drift={b: results[b] for b in passed})


def fidelity_subject(slice_size: int) -> tuple[object, str]:
    """The full subject the Dice is measured on: upstream's example peaks when present, else a synthetic one
    (HCP-size for S=144; a small one for the small test bundles)."""
    if EXAMPLE_PEAKS.is_file():
        return str(EXAMPLE_PEAKS), EXAMPLE_PEAKS.name
    from export.demo_input import HCP_SHAPE, las_affine, synthetic_peaks

    shape = HCP_SHAPE if slice_size >= 144 else (24, 28, 24)
    return (synthetic_peaks(shape, seed=0), las_affine(shape, 1.25)), f"synthetic {'x'.join(map(str, shape))}"


def build_precision(precision: str, work: Path, manifest: Manifest, fp32: Artifact, check: dict,
                    min_dice: float, log: Callable[[str], None]) -> Artifact:
    """Make one precision's artifact in `work`, measure it, gate it; its drift holds every figure per backend.
    `check`: the check batches and their live-model references, the calibration batches, the fidelity subject
    and (filled on first use) the fp32 masks of that subject."""
    artifact = MAKERS[precision](work, check["calibration"])
    subject, name = check["subject"]
    if check.get("reference_masks") is None:
        check["reference_masks"] = subject_masks(manifest, fp32, runner(work, fp32, "onnxruntime"), subject)
    provisional = replace(manifest, artifacts=(*manifest.artifacts, artifact),
                          files={**manifest.files, **file_entries(work, list(artifact.files))})
    results = {}
    for backend in artifact.backends:
        loaded = runner(work, artifact, backend)  # one load serves the drift and the full subject
        drift = measure_drift(loaded, check["batches"], check["references"])
        drift["dice"] = fidelity(provisional, artifact, loaded, subject, check["reference_masks"], name)
        results[backend] = drift
        log(f"[export]   {artifact.id} on {backend}: max abs {drift['max_abs']:.2e}, Dice vs fp32 min "
            f"{drift['dice']['dice_min']:.4f} ({drift['dice']['worst_bundle']}), mean {drift['dice']['dice_mean']:.4f}")
    return gate(artifact, results, min_dice)


def check_inputs(batches: list[np.ndarray], references: list[np.ndarray], batch_size: int,
                 slice_size: int) -> dict:
    calibration, source = calibration_batches(batch_size, slice_size)
    return {"batches": batches, "references": references, "subject": fidelity_subject(slice_size),
            "calibration": {"batches": calibration, "source": source}, "reference_masks": None}
