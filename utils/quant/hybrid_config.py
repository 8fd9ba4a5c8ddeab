"""A hybrid (some layers kept in float) in each toolchain's own terms, resolved against the converted
model's own layer names, because a name the toolchain does not know is ignored without a word
(rknn-toolkit2 #360: a hybrid setting that changed nothing).

    names = openvino_ignored_names(ov_model, onnx_model, exclude)   # for nncf.IgnoredScope(names=...)
    count_ops(ov_model, "FakeQuantize")                             # how many quantisers the IR kept

onnxruntime takes the ONNX node names as they are (``quantize_static(nodes_to_exclude=...)``). OpenVINO
names an op after the ONNX node it came from, a Conv split into ``<node>/WithoutBiases`` and an Add, or,
for a graph output, after the output tensor (``obj_s8``); a SiLU's Sigmoid and Mul fuse into one Swish
named after the Mul.
"""
from __future__ import annotations

from typing import Sequence


def openvino_ignored_names(ov_model, onnx_model, nodes: Sequence[str]) -> list[str]:
    """Names of the ops of ``ov_model`` (converted from ``onnx_model``) that came from the ONNX ``nodes``."""
    wanted = set(nodes)
    outputs = {t for n in onnx_model.graph.node if n.name in wanted for t in n.output}
    names = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter", "Result"):
            continue
        name = op.get_friendly_name()
        if name in wanted or name.rsplit("/", 1)[0] in wanted or name in outputs:
            names.append(name)
    return names


def count_ops(ov_model, type_name: str) -> int:
    return sum(op.get_type_name() == type_name for op in ov_model.get_ordered_ops())
