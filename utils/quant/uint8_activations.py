"""A QDQ file's int8 activations rewritten as uint8: the same grid, shifted by 128, so the same arithmetic.

onnxruntime's x86 CPU kernels fuse DequantizeLinear -> Conv -> QuantizeLinear into one int8 QLinearConv for
uint8 activations (u8 x s8, ``vpmaddubsw``/VNNI); with int8 activations most convs stay float Convs between
Q/DQ pairs (yoloxs_rslu at 256 px, one AVX2 core: 61 of 83 convs unfused, 0.87x the float file's speed;
rewritten, all 83 fused, 1.87x); onnxruntime's quantisation guide names U8S8 as the x86 (AVX2, AVX-512)
fast path. TensorRT reads int8 activations only (zero point 0), so the rewrite is a choice for onnxruntime
on x86 (export.py ``--int8-activations uint8``), not the default.

For an activation on an int8 grid (scale s, zero point z): QuantizeLinear gives q = clamp(round(x / s) + z,
-128, 127); on the uint8 grid with zero point z + 128 it gives q + 128, and DequantizeLinear's (q - z) * s
is unchanged. Weights (int8 constants read by DequantizeLinear alone) and int32 biases are left as they are.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

ACTIVATION_DTYPES = ("int8", "uint8")  # export.py --int8-activations; int8 is what every toolchain reads
SHIFT = 128


def to_uint8_activations(model: onnx.ModelProto) -> int:
    """Rewrite ``model``'s int8 activation grids (each QuantizeLinear and the DequantizeLinear nodes reading
    it) as uint8 in place; returns how many QuantizeLinear nodes changed."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    constants.update({n.output[0]: _constant_tensor(n) for n in graph.node if n.op_type == "Constant"})
    readers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    changed, replaced = 0, set()
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        if q.input[0] in constants:
            continue  # a weight (a QAT export quantises its float weights in the graph): int8 stays
        zero = constants.get(q.input[2]) if len(q.input) > 2 else None
        if zero is None or zero.data_type != TensorProto.INT8:
            continue  # already uint8, or a zero point that is not a constant: left alone
        shifted = numpy_helper.to_array(zero).astype(np.int16) + SHIFT
        replaced.add(q.input[2])
        name = f"{q.output[0]}_zero_point_uint8"
        graph.initializer.append(numpy_helper.from_array(shifted.astype(np.uint8), name))
        q.input[2] = name  # its own copy: an int8 zero point may be shared with a weight's DequantizeLinear
        for dq in readers.get(q.output[0], []):
            if dq.op_type == "DequantizeLinear":
                if len(dq.input) > 2:
                    dq.input[2] = name
                else:
                    dq.input.append(name)
        changed += 1
    _drop_unused(graph, replaced)
    return changed


def _drop_unused(graph, names: set) -> None:
    """Remove the int8 zero points among ``names`` that no node reads any more."""
    used = {i for n in graph.node for i in n.input}
    unused = names - used
    for t in [t for t in graph.initializer if t.name in unused]:
        graph.initializer.remove(t)
    for n in [n for n in graph.node if n.op_type == "Constant" and n.output[0] in unused]:
        graph.node.remove(n)


def write_uint8_activations(path) -> int:
    """Rewrite the ONNX file at ``path`` in place (to_uint8_activations); returns the count."""
    path = Path(path)
    model = onnx.load(str(path))
    changed = to_uint8_activations(model)
    onnx.save(model, str(path))
    return changed


def _constant_tensor(node) -> TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
    return None
