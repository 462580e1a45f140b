"""The one registry of tasks, tract definitions and bundle names (upstream's get_bundle_names without "BG").

Dependency-free: the runtime needs it, export/ imports it from here.
"""
from __future__ import annotations

from dataclasses import dataclass

TRACTQUERIER_BUNDLES: tuple[str, ...] = (
    "AF_left", "AF_right", "ATR_left", "ATR_right", "CA", "CC_1", "CC_2", "CC_3", "CC_4", "CC_5", "CC_6",
    "CC_7", "CG_left", "CG_right", "CST_left", "CST_right", "MLF_left", "MLF_right", "FPT_left",
    "FPT_right", "FX_left", "FX_right", "ICP_left", "ICP_right", "IFO_left", "IFO_right", "ILF_left",
    "ILF_right", "MCP", "OR_left", "OR_right", "POPT_left", "POPT_right", "SCP_left", "SCP_right",
    "SLF_I_left", "SLF_I_right", "SLF_II_left", "SLF_II_right", "SLF_III_left", "SLF_III_right",
    "STR_left", "STR_right", "UF_left", "UF_right", "CC", "T_PREF_left", "T_PREF_right", "T_PREM_left",
    "T_PREM_right", "T_PREC_left", "T_PREC_right", "T_POSTC_left", "T_POSTC_right", "T_PAR_left",
    "T_PAR_right", "T_OCC_left", "T_OCC_right", "ST_FO_left", "ST_FO_right", "ST_PREF_left",
    "ST_PREF_right", "ST_PREM_left", "ST_PREM_right", "ST_PREC_left", "ST_PREC_right", "ST_POSTC_left",
    "ST_POSTC_right", "ST_PAR_left", "ST_PAR_right", "ST_OCC_left", "ST_OCC_right",
)

# Upstream's "All_endpoints": every TractQuerier+ bundle, beginning then end, in the same order.
ENDINGS_BUNDLES: tuple[str, ...] = tuple(f"{b}_{end}" for b in TRACTQUERIER_BUNDLES for end in ("b", "e"))

XTRACT_BUNDLES: tuple[str, ...] = (
    "ac", "af_l", "af_r", "ar_l", "ar_r", "atr_l", "atr_r", "cbd_l", "cbd_r", "cbp_l", "cbp_r",
    "cbt_l", "cbt_r", "cst_l", "cst_r", "fa_l", "fa_r", "fma", "fmi", "fx_l", "fx_r", "ifo_l",
    "ifo_r", "ilf_l", "ilf_r", "mcp", "mdlf_l", "mdlf_r", "or_l", "or_r", "slf1_l", "slf1_r",
    "slf2_l", "slf2_r", "slf3_l", "slf3_r", "str_l", "str_r", "uf_l", "uf_r", "vof_l", "vof_r",
)

TASKS = ("tract_segmentation", "endings_segmentation", "TOM", "dm_regression")
TRACT_DEFINITIONS = ("TractQuerier+", "xtract")


@dataclass(frozen=True)
class Model:
    """One upstream pretrained model: what it outputs, how it runs and where its weights live.

    Mirrors (TractSeg 2.10): ``channels_per_bundle`` 3 for TOM (``NR_OF_CLASSES = 3 * len(bundles)``); ``linear``:
    no sigmoid (``BaseModel.predict`` for peak_regression / dm_regression); ``upsample``: the deep-supervision
    ``nn.Upsample`` mode (``Peaks_AngL`` -> ``peak_reg``: nearest); ``directions``: the slice axes run and averaged
    (TOM: ``bin/TractSeg`` forces ``single_orientation``, ``SLICE_DIRECTION = "y"``); ``threshold``: dm_regression's
    ``seg[seg < Config.THRESHOLD] = 0`` in ``bin/TractSeg`` (``DmReg``: 0.01, ``DmReg_All_xtract_PeakRot4``:
    0.0001). ``parts``: TOM's four part models (``All_Part1``..``All_Part4``), each with its own weights."""

    task: str
    tract_definition: str
    bundles: tuple[str, ...]
    zenodo_record: int
    zenodo_file: str
    local_name: str
    channels_per_bundle: int = 1
    linear: bool = False
    upsample: str = "bilinear"
    directions: tuple[int, ...] = (0, 1, 2)
    threshold: float | None = None
    part: str = ""  # "Part1".."Part4" for a TOM part model
    parts: tuple[Model, ...] = ()

    @property
    def n_classes(self) -> int:
        """The network's output channels (TOM's whole model: the sum over its parts)."""
        return len(self.bundles) * self.channels_per_bundle

    @property
    def dropout(self) -> bool:
        """Whether upstream's network has its dropout layer (``--uncertainty``): tract_segmentation's configs
        (``experiments/tract_seg.py``, both tract definitions) set ``USE_DROPOUT = True``, the others do not."""
        return self.task == "tract_segmentation"

    @property
    def name(self) -> str:
        base = self.task if self.tract_definition == "TractQuerier+" else f"{self.task}_xtract"
        return f"{base}_{self.part.lower()}" if self.part else base

    @property
    def largest_part(self) -> Model:
        """The model whose outputs are held at once (TOM: its largest part), for the input's memory estimate."""
        return max(self.parts, key=lambda m: m.n_classes) if self.parts else self


TOM_PART_SIZE = 18  # upstream's All_Part1..All_Part4: TRACTQUERIER_BUNDLES in four consecutive runs of 18
# Zenodo record and file of each TOM part (tractseg.libs.utils.download_pretrained_weights)
TOM_WEIGHTS = ((3239216, "best_weights_ep62.npz"), (3239220, "best_weights_ep130.npz"),
               (3239221, "best_weights_ep91.npz"), (3239222, "best_weights_ep148.npz"))


def _tom_part(index: int) -> Model:
    record, file = TOM_WEIGHTS[index]
    return Model("TOM", "TractQuerier+", TRACTQUERIER_BUNDLES[index * TOM_PART_SIZE:(index + 1) * TOM_PART_SIZE],
                 record, file, f"pretrained_weights_peak_regression_part{index + 1}_v2.npz", channels_per_bundle=3,
                 linear=True, upsample="nearest", directions=(1,), part=f"Part{index + 1}")


TOM_MODEL = Model("TOM", "TractQuerier+", TRACTQUERIER_BUNDLES, 0, "", "", channels_per_bundle=3, linear=True,
                  upsample="nearest", directions=(1,), parts=tuple(_tom_part(i) for i in range(4)))

# Every upstream weights file (TOM: its four parts; the whole TOM model is TOM_MODEL, found by model_for)
MODELS: tuple[Model, ...] = (
    Model("tract_segmentation", "TractQuerier+", TRACTQUERIER_BUNDLES, 3518348, "best_weights_ep220.npz",
          "pretrained_weights_tract_segmentation_v3.npz"),
    Model("endings_segmentation", "TractQuerier+", ENDINGS_BUNDLES, 3518331, "best_weights_ep143.npz",
          "pretrained_weights_endings_segmentation_v4.npz"),
    Model("tract_segmentation", "xtract", XTRACT_BUNDLES, 3634539, "best_weights_ep266.npz",
          "pretrained_weights_tract_segmentation_xtract_v1.npz"),
    *TOM_MODEL.parts,
    Model("dm_regression", "TractQuerier+", TRACTQUERIER_BUNDLES, 3518346, "best_weights_ep199.npz",
          "pretrained_weights_dm_regression_v2.npz", linear=True, threshold=0.01),
    Model("dm_regression", "xtract", XTRACT_BUNDLES, 3634549, "best_weights_ep207.npz",
          "pretrained_weights_dm_regression_xtract_v1.npz", linear=True, threshold=0.0001),
)


def model_for(task: str, tract_definition: str = "TractQuerier+") -> Model:
    """The upstream model for a task and tract definition, or a ValueError naming what is supported."""
    for m in (TOM_MODEL, *MODELS):
        if m.task == task and m.tract_definition == tract_definition and not m.part:
            return m
    supported = ", ".join(f"{m.task}/{m.tract_definition}" for m in (TOM_MODEL, *MODELS) if not m.part)
    raise ValueError(f"no upstream model for task {task!r} with tract definition {tract_definition!r} "
                     f"(supported: {supported})")
