"""What an export is asked to do: ExportOptions (with NmsOptions and DatasetImages), checked once, when
they are made. The checks that need the model (its largest stride) are ``check_model``'s.

    opts = ExportOptions(weights="best.pt", include=("onnx", "rknn"), deploy=True, int8=True,
                         images=DatasetImages("data/demo.yaml", calibration=100))
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from utils.infer.outputs import DEPLOY_LAYOUTS
from utils.export.nms_graph import NMS_DEFAULTS, check_nms_args
from utils.export.onnx_file import DYNAMIC_AXES, check_opset
from utils.export.int8 import CALIB_METHODS
from utils.export.rewrite import FOCUS_MODES
from utils.quant.sensitivity import DEFAULT_BUDGET
from utils.quant.uint8_activations import ACTIVATION_DTYPES

INCLUDE = ("onnx", "torchscript", "openvino", "rknn")
CONVERTED = ("openvino", "rknn")  # converted from the verified ONNX file, so it is written for them too


@dataclass(frozen=True)
class NmsOptions:
    """--nms: the end-to-end graph's NonMaxSuppression (utils/export/nms_graph.py)."""

    max_det: int = NMS_DEFAULTS["max_det"]
    iou_thres: float = NMS_DEFAULTS["iou_thres"]
    conf_thres: float = NMS_DEFAULTS["conf_thres"]

    def __post_init__(self):
        check_nms_args(self.max_det, self.iou_thres, self.conf_thres)

    def metadata(self) -> dict:
        return {"max_det": int(self.max_det), "iou_thres": float(self.iou_thres), "conf_thres": float(self.conf_thres),
                "class_aware": True, "multi_label": True}


@dataclass(frozen=True)
class DatasetImages:
    """--data: the dataset whose letterboxed images calibrate the 8-bit models (``calibration`` images of
    ``split``); int8 and converted models are compared with float32 on images of the other split."""

    data: str | dict
    calibration: int = 100
    split: str = "train"

    def __post_init__(self):
        if int(self.calibration) < 1:
            raise ValueError(f"--calib-images must be >= 1, got {self.calibration}")


@dataclass(frozen=True)
class ExportOptions:
    weights: str | Path | None = None  # project checkpoint or official .pth; None: cfg with random weights
    cfg: str | Path | None = None
    include: tuple = ("onnx",)
    img_size: tuple = (640, 640)       # (h, w); an int means square
    batch_size: int = 1
    opset: int = 12
    dynamic: tuple = ()                # "batch" and/or "hw"
    simplify: bool = False
    deploy: bool = False               # BatchNorm folded, NPU-friendly separate outputs
    deploy_outputs: str | None = None  # with deploy: one of DEPLOY_LAYOUTS (default: its first)
    focus_conv: str | None = None      # s2d or fold
    half: bool = False
    nms: NmsOptions | None = None
    int8: bool = False                 # also int8 models, calibrated on ``images``
    sensitivity: bool = False          # with int8: per-layer-group sensitivity and the hybrid it recommends
    hybrid_budget: float = DEFAULT_BUDGET  # mAP50-95 the recommended hybrid may lose against float
    int8_activations: str = ACTIVATION_DTYPES[0]  # uint8: the same grid shifted, onnxruntime's fast x86 kernels
    calib_method: str = CALIB_METHODS[0]  # int8 ONNX: each activation's range from the images' min/max or percentile
    images: DatasetImages | None = None
    rknn_platform: str = "rk3588"
    device: str = "cpu"
    output: str | Path | None = None   # the ONNX path; default beside the weights (or the YAML)
    report: bool = True                # the NPU readiness report of every ONNX file

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen: normalised once, here)
        set_("include", tuple([self.include] if isinstance(self.include, str) else self.include))
        set_("dynamic", tuple(self.dynamic or ()))
        set_("img_size", img_size_hw(self.img_size))
        self._check()

    @property
    def layout(self) -> str:
        if self.nms is not None:
            return "nms"
        return (self.deploy_outputs or DEPLOY_LAYOUTS[0]) if self.deploy else "decoded"

    @property
    def converted(self) -> tuple[str, ...]:
        return tuple(inc for inc in CONVERTED if inc in self.include)

    def _check(self) -> None:
        for inc in self.include:
            if inc not in INCLUDE:
                raise ValueError(f"--include {inc!r}: choose from {INCLUDE}")
        if not self.weights and not self.cfg:
            raise ValueError("pass --weights (a checkpoint) or --cfg (a model YAML, random weights)")
        check_opset(self.opset)
        if int(self.batch_size) < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.deploy_outputs is not None and not self.deploy:
            raise ValueError("--deploy-outputs chooses the outputs of a --deploy export; add --deploy")
        if self.deploy_outputs is not None and self.deploy_outputs not in DEPLOY_LAYOUTS:
            raise ValueError(f"--deploy-outputs must be one of {DEPLOY_LAYOUTS}, got {self.deploy_outputs!r}")
        if self.focus_conv is not None and self.focus_conv not in FOCUS_MODES:
            raise ValueError(f"--focus-conv must be one of {FOCUS_MODES}, got {self.focus_conv!r}")
        if self.nms is not None and self.deploy_outputs is not None:
            raise ValueError("--nms writes its own outputs (num_dets, boxes, scores, classes); drop --deploy-outputs")
        if self.nms is not None and "torchscript" in self.include:
            raise ValueError("--nms is ONNX only (NonMaxSuppression); export torchscript without --nms")
        if self.half:
            require_cuda_for_half(self.device)
        if self.int8 and self.images is None:
            raise ValueError("--int8 calibrates on real images: pass --data (a dataset yaml, e.g. data/demo.yaml)")
        if self.half and self.int8:
            raise ValueError("--int8 quantises the float32 export; drop --half")
        if self.half and self.converted:
            raise ValueError(f"--include {self.converted[0]} converts the float32 ONNX and chooses its own precision "
                             f"(--int8 for 8 bits); drop --half")
        if self.int8 and self.nms is not None:
            raise ValueError("--int8 with --nms would quantise the NMS tail: quantise the network (--deploy --int8) "
                             "and run NMS after it")
        if self.sensitivity:
            self._check_sensitivity()
        if self.calib_method not in CALIB_METHODS:
            raise ValueError(f"--calib-method must be one of {CALIB_METHODS}, got {self.calib_method!r}")
        if self.calib_method != CALIB_METHODS[0] and not self.int8:
            raise ValueError(f"--calib-method {self.calib_method} calibrates post-training int8: add --int8 (and --data)")
        if self.int8_activations not in ACTIVATION_DTYPES:
            raise ValueError(f"--int8-activations must be one of {ACTIVATION_DTYPES}, got {self.int8_activations!r}")
        if self.int8_activations != ACTIVATION_DTYPES[0] and "onnx" not in self.include:
            raise ValueError(f"--int8-activations {self.int8_activations} rewrites the int8 ONNX file for onnxruntime: "
                             f"add --include onnx")
        if self.int8_activations != ACTIVATION_DTYPES[0] and self.converted:
            raise ValueError(f"--int8-activations {self.int8_activations} is for onnxruntime on x86; "
                             f"--include {self.converted[0]} reads the int8 file: export it separately")
        if self.int8 and "onnx" not in self.include and not self.converted:
            raise ValueError("--int8 quantises the ONNX file, the OpenVINO IR or the RKNN model: add --include onnx, "
                             "openvino or rknn")
        if "rknn" in self.include:
            self._check_rknn()
        bad = [d for d in self.dynamic if d not in DYNAMIC_AXES]
        if bad:
            raise ValueError(f"--dynamic takes {' and/or '.join(DYNAMIC_AXES)}, got {bad}")

    def _check_sensitivity(self) -> None:
        if not self.int8:
            raise ValueError("--sensitivity measures what 8 bits cost per layer: add --int8 (and --data)")
        if "onnx" not in self.include:
            raise ValueError("--sensitivity quantises the ONNX file one layer group at a time in onnxruntime: "
                             "add --include onnx")
        if self.img_size[0] != self.img_size[1]:
            raise ValueError(f"--sensitivity measures mAP with val.py's square input: export a square --img-size "
                             f"(got {self.img_size[0]} {self.img_size[1]})")
        if not 0.0 <= float(self.hybrid_budget) < 1.0:
            raise ValueError(f"--hybrid-budget is a share of mAP50-95 in [0, 1) (0.015 = 1.5 points), got "
                             f"{self.hybrid_budget}")

    def _check_rknn(self) -> None:
        from utils.export.rknn import check_platform

        if self.dynamic:
            raise ValueError("--include rknn needs a static input shape (RKNN models have one): drop --dynamic")
        if int(self.batch_size) != 1:
            raise ValueError(f"--include rknn converts batch 1 (the NPU runs one image at a time; rknn-toolkit2 "
                             f"multi-batch is its own build option), got --batch-size {self.batch_size}")
        if self.nms is not None:
            raise ValueError("--include rknn: Rockchip NPUs do not run NonMaxSuppression; export --deploy (per-level "
                             "outputs) and run NMS after the model")
        check_platform(self.rknn_platform)

    def check_model(self, stride: int) -> None:
        """The checks that need the model: every side a multiple of its largest stride."""
        h, w = self.img_size
        if h % stride or w % stride:
            raise ValueError(f"--img-size {h} {w}: every side must be a multiple of the largest stride {stride} "
                             f"(e.g. {(-(-h // stride)) * stride} {(-(-w // stride)) * stride})")

    @classmethod
    def from_flat(cls, nms: bool = False, max_det: int = NmsOptions.max_det, iou_thres: float = NmsOptions.iou_thres,
                  conf_thres: float = NmsOptions.conf_thres, int8: bool = False, data=None,
                  calib_images: int = DatasetImages.calibration, calib_split: str = DatasetImages.split,
                  **kwargs) -> ExportOptions:
        """From export.py's flat option names (--nms --max-det ..., --data --calib-images --calib-split)."""
        unknown = sorted(set(kwargs) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown export option(s) {unknown}")
        return cls(nms=NmsOptions(max_det, iou_thres, conf_thres) if nms else None, int8=int8,
                   images=DatasetImages(data, calib_images, calib_split) if data else None, **kwargs)


def require_cuda_for_half(device: str) -> None:
    """float16 exports are for GPU runtimes and are traced and verified on CUDA."""
    from utils.devices import select_device

    if select_device(str(device)).type != "cuda":
        raise ValueError("--half exports float16 for GPU runtimes and needs a CUDA device (--device 0); "
                         "for 8-bit NPUs use --int8")


def img_size_hw(size) -> tuple[int, int]:
    """(h, w) from --img-size: one side for a square, or h and w."""
    size = [size] if isinstance(size, int) else list(size)
    if len(size) not in (1, 2) or any(int(s) < 1 for s in size):
        raise ValueError(f"--img-size takes h [w], positive, got {size}")
    return (int(size[0]), int(size[-1]))

