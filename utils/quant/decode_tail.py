"""The decoding tail of an exported detector: the nodes after its last weighted layers (Conv, MatMul) that
turn prediction maps into boxes and scores, found from the graph alone.

    decode_nodes(onnx.load("best.onnx"))   # ["/Reshape", "/Concat_3", "/Add", "/Mul_1", ...]

Post-training int8 keeps these in float. They cost next to nothing, and quantising them is how the "split"
and "decoded" layouts lose everything: the decoding concatenates box pixels (0 .. image size) with [0, 1]
scores into one tensor, one 8-bit scale then steps by ~2 px at 256 px, and every score rounds to 0
(damoyolo_s on the demo set: mAP50-95 0.498 float, 0.000 with the tail in int8, see README). The head's own
activation of a prediction map (Sigmoid on a conv, what the per-level layout outputs) and a learnt scalar
scale on one (DAMO's GFL head: ``Scale`` on the box conv) are not decoding: they stay quantised, as an NPU
computes them.
"""
from __future__ import annotations

import numpy as np

WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}  # what 8 bits are for
MAP_OPS = {"Sigmoid", "Mul"}  # a head's activation or scalar scale of a prediction map: part of the network
_SILENT = {"Constant", "Identity"}


def decode_nodes(model) -> list[str]:
    """Names of the nodes (an onnx.ModelProto, nodes in topological order, as ONNX requires) from which no
    weighted node is reachable, except a map's own activation or scalar scale (MAP_OPS applied directly to a
    weighted node's output, any other input a constant scalar); in graph order. Empty for a per-level
    export, whose outputs are the maps themselves."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    network: set[int] = set()  # ids of nodes that are, or feed, a weighted node
    for node in reversed(model.graph.node):
        if node.op_type in WEIGHTED or any(id(c) in network for out in node.output for c in consumers.get(out, ())):
            network.add(id(node))
    producer = {out: node for node in model.graph.node for out in node.output}
    scalars = {i.name for i in model.graph.initializer if int(np.prod(i.dims)) == 1}
    for n in model.graph.node:  # torch.onnx writes equal initializers once, the others as Identity of it
        if (n.op_type == "Constant" and _constant_size(n) == 1) or (n.op_type == "Identity" and n.input[0] in scalars):
            scalars.add(n.output[0])

    def map_op(node) -> bool:
        maps = [i for i in node.input if producer.get(i) is not None and producer[i].op_type in WEIGHTED]
        return node.op_type in MAP_OPS and len(maps) == 1 and all(i in scalars for i in node.input if i not in maps)

    return [n.name for n in model.graph.node if id(n) not in network and n.op_type not in _SILENT and not map_op(n)]


def _constant_size(node) -> int:
    """Elements of a Constant node's tensor value (-1 for any other kind of value)."""
    value = next((a for a in node.attribute if a.name == "value"), None)
    return int(np.prod(value.t.dims)) if value is not None and value.HasField("t") else -1
