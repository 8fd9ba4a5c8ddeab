"""torch -> ONNX with TorchScript's exporter, onnx-simplifier, metadata, and clear opset errors.

    export_onnx(wrapped, im, "model.onnx", opset=12, output_names=[...], dynamic=("batch",), simplify=True,
                metadata={...})

torch 2.13's default exporter (dynamo) needs onnxscript; this module uses the TorchScript-based one
(``dynamo=False``), which supports opsets 7-20 and the custom NonMaxSuppression symbolic of
utils/export/nms_graph.py. When an op of the model has no ONNX form at the chosen opset, the error names
the op and the opset it needs (OpsetError) instead of torch's long graph dump.
"""
from __future__ import annotations

import io
import json
import logging
import re
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Sequence

import torch

LOGGER = logging.getLogger("yolox5.export")
MIN_OPSET, MAX_OPSET = 10, 20  # 10: Resize and strided Slice; 20: the TorchScript exporter's last
DYNAMIC_AXES = ("batch", "hw")
# torch op -> the ONNX op it becomes, for messages
ONNX_OP_OF = {"index_put": "ScatterND", "index_put_": "ScatterND", "round": "Round", "gather": "GatherElements",
              "scatter": "ScatterElements", "cumsum": "CumSum", "det": "Det", "hardswish": "HardSwish",
              "grid_sampler": "GridSample", "unique_dim": "Unique", "roll": "Slice + Concat"}
HINTS = {"index_put": "an in-place slice write such as y[..., :2] = ... becomes ScatterND at opset 11; "
                      "build the tensor with torch.cat instead (as DetectX.decode does)"}


class OpsetError(ValueError):
    """An op of the model cannot be expressed at the chosen opset."""

    def __init__(self, op: str, opset: int, needed: int | None, detail: str = ""):
        self.op, self.opset, self.needed = op, opset, needed
        onnx_op = ONNX_OP_OF.get(op)
        what = f"'{op}'" + (f" (ONNX {onnx_op})" if onnx_op else "")
        need = f"it needs opset >= {needed}: export with --opset {needed} or higher" if needed else \
            "no opset of this exporter supports it"
        hint = HINTS.get(op)
        super().__init__(f"the op {what} cannot be expressed at opset {opset}: {need}"
                         + (f". Hint: {hint}" if hint else "") + (f" [{detail}]" if detail else ""))


def parse_opset_error(e: Exception, opset: int) -> OpsetError | None:
    """An OpsetError for torch's 'not supported at this opset' errors, None for anything else."""
    text = str(e)
    m = re.search(r"operator '(?:aten::)?([\w.]+)' to ONNX opset version (\d+) is not supported\."
                  r"(?: Support for this operator was added in version (\d+))?", text)
    if m:
        return OpsetError(m.group(1), opset, int(m.group(3)) if m.group(3) else None)
    m = re.search(r"ONNX export of ([\w.]+) in opset (\d+)\. Please try opset version (\d+)", text)
    if m:
        return OpsetError(m.group(1), opset, int(m.group(3)))
    return None


def check_opset(opset: int) -> None:
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"--opset must be an integer in [{MIN_OPSET}, {MAX_OPSET}], got {opset!r} "
                         f"(10 is what OpenVINO 2021 and the older NPU converters take)")


def dynamic_axes_of(input_name: str, output_names: Sequence[str], output_ranks: Sequence[int],
                    dynamic: Sequence[str], layout: str) -> dict | None:
    """torch.onnx dynamic_axes for the input and every output; ``dynamic`` holds 'batch' and/or 'hw'."""
    bad = [d for d in dynamic if d not in DYNAMIC_AXES]
    if bad:
        raise ValueError(f"--dynamic takes {DYNAMIC_AXES}, got {bad}")
    if not dynamic:
        return None
    batch, hw = "batch" in dynamic, "hw" in dynamic
    axes = {input_name: {**({0: "batch"} if batch else {}), **({2: "height", 3: "width"} if hw else {})}}
    for name, rank in zip(output_names, output_ranks):
        a = {0: "batch"} if batch else {}
        if hw and layout == "per-level":
            s = name.rsplit("_s", 1)[-1]
            a.update({2: f"h{s}", 3: f"w{s}"})
        elif hw and layout in ("decoded", "split") and rank == 3:
            a[1] = "anchors"
        if a:
            axes[name] = a
    return axes


def export_onnx(model: torch.nn.Module, im: torch.Tensor, path, opset: int = 12, input_name: str = "images",
                output_names: Sequence[str] = ("output",), dynamic: Sequence[str] = (), layout: str = "decoded",
                simplify: bool = False, metadata: dict | None = None) -> Path:
    """Trace ``model`` on ``im`` into ``path`` (ONNX), simplify, store metadata; returns the path.

    Raises OpsetError when an op needs a newer opset, RuntimeError when onnx-simplifier's own check fails.
    """
    import onnx

    check_opset(opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        outs = model(im)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    if len(outs) != len(output_names):
        raise ValueError(f"the model returns {len(outs)} outputs, but {len(output_names)} names were given")
    axes = dynamic_axes_of(input_name, output_names, [o.dim() for o in outs], dynamic, layout)
    buffer = io.StringIO()
    try:
        with warnings.catch_warnings(), redirect_stdout(buffer), redirect_stderr(buffer):
            warnings.simplefilter("ignore")  # TracerWarnings about constant sizes are expected
            torch.onnx.export(model, im, str(path), opset_version=opset, input_names=[input_name],
                              output_names=list(output_names), dynamic_axes=axes, do_constant_folding=True,
                              dynamo=False)
    except Exception as e:  # noqa: BLE001 - re-raised below, translated when it is an opset problem
        opset_error = parse_opset_error(e, opset)
        if opset_error is not None:
            raise opset_error from None
        raise
    onnx_model = onnx.load(str(path))
    if simplify:
        onnx_model = simplify_onnx(onnx_model)
    set_output_shapes(onnx_model, [tuple(o.shape) for o in outs], axes or {})
    if metadata:
        set_metadata(onnx_model, metadata)
    onnx.save(onnx_model, str(path))
    return path


def simplify_onnx(onnx_model):
    """onnx-simplifier (constant folding, shape inference, dead-node removal), its own check enforced."""
    try:
        import onnxsim
    except ImportError:
        raise ImportError("--simplify needs onnx-simplifier: pip install onnxsim") from None
    simplified, ok = onnxsim.simplify(onnx_model)
    if not ok:
        raise RuntimeError("onnx-simplifier's check failed: the simplified model differs from the original; "
                           "export without --simplify")
    return simplified


def set_output_shapes(onnx_model, shapes: Sequence[tuple], axes: dict) -> None:
    """Write every output's shape: the traced size on fixed axes, the axis name on dynamic ones
    (the exporter leaves sizes that pass through Shape ops unnamed, e.g. 5 + nc of a dynamic-hw output)."""
    for out, shape in zip(onnx_model.graph.output, shapes):
        dims = out.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        names = axes.get(out.name, {})
        for k, (dim, size) in enumerate(zip(dims, shape)):
            if k in names:
                dim.dim_param = names[k]
            else:
                dim.dim_value = int(size)


def set_metadata(onnx_model, metadata: dict) -> None:
    """Store ``metadata`` in metadata_props: strings as they are, anything else as JSON."""
    del onnx_model.metadata_props[:]
    for k, v in metadata.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = str(k), v if isinstance(v, str) else json.dumps(v)


def read_metadata(onnx_model) -> dict:
    """metadata_props as a dict of strings."""
    return {p.key: p.value for p in onnx_model.metadata_props}
