"""The layer groups of an exported ONNX file: its nodes gathered by the model layer that wrote them, with
the multiply-accumulates each group costs, so quantisation can be switched per layer and priced.

    groups = layer_groups(onnx.load("best.onnx"), describe={"model.12": "C3"})
    [(g.name, len(g.nodes), g.macs) for g in groups]     # [("model.0", 4, 3538944), ...]

torch.onnx names every node after the module path that wrote it (``/model.12/cv1/conv/Conv``), so the
first scope is the YAML row (``model.12``) or a head attribute (``cls_preds.0``, where the export calls
the head's branches itself). A detect layer whose branches are traced inside its row is split by its
second scope (``model.24/cls_convs.0``): classification and box branches quantise very differently. Nodes written outside any module (the decoding or output
activations of the head) form the group ``outputs``. Constants and identities are not listed: they
compute nothing to quantise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

OUTPUTS = "outputs"  # the group of nodes written outside any module
_SILENT = {"Constant", "Identity"}
_MATMUL_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
_ROW = re.compile(r"^model\.(\d+)$")
_INDEXED = re.compile(r"^[A-Za-z_]+\.\d+$")  # cls_convs.0: one level's branch


@dataclass
class LayerGroup:
    name: str                                  # "model.12", "cls_preds.0", "model.24/cls_convs.0", "outputs"
    nodes: list = field(default_factory=list)  # ONNX node names, in graph order
    macs: int = 0                              # multiply-accumulates per image of its Conv / MatMul nodes
    description: str = ""                      # what wrote it (the YAML module), when known

    @property
    def scoped(self) -> bool:
        """Whether every node name starts with the group's scope (``/model.12/...``)."""
        return self.name != OUTPUTS


def _scopes(node_name: str) -> list[str]:
    return [p for p in node_name.split("/") if p][:-1]  # the last part is the op itself


def _head_row(model) -> str | None:
    """The detect layer when the head is one YAML row: the highest ``model.N`` scope, if its modules are
    per-level branches of at least two kinds (``cls_convs.0``, ``reg_preds.2``) rather than one block's
    parts (a neck block's ``convs.0``, ``convs.1``)."""
    scopes = [s for n in model.graph.node if (s := _scopes(n.name))]
    rows = [int(m.group(1)) for s in scopes if (m := _ROW.match(s[0]))]
    if not rows:
        return None
    last = f"model.{max(rows)}"
    kinds = {s[1].rsplit(".", 1)[0] for s in scopes if s[0] == last and len(s) > 1 and _INDEXED.match(s[1])}
    return last if len(kinds) >= 2 else None


def group_name(node_name: str, head_row: str | None) -> str:
    """The group of a node: its first scope, the first two in the head row, OUTPUTS outside any module."""
    scopes = _scopes(node_name)
    if not scopes:
        return OUTPUTS
    if scopes[0] == head_row and len(scopes) > 1:
        return f"{scopes[0]}/{scopes[1]}"
    return scopes[0]


def node_macs(model) -> dict[str, int]:
    """Multiply-accumulates per image of each Conv / ConvTranspose / MatMul / Gemm node whose weight is an
    initializer and whose output shape shape inference knows (0 otherwise)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = dims
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    macs = {}
    for node in model.graph.node:
        out, w = shapes.get(node.output[0]), weights.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type not in _MATMUL_OPS or out is None or w is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):  # out [B, C_out, H, W], w [C_out, C_in / groups, kh, kw]
            per_output = int(np.prod(w[1:])) if node.op_type == "Conv" else int(np.prod(w[:1] + w[2:]))
            macs[node.name] = int(np.prod(out[1:])) * per_output
        else:  # out [..., N], w [K, N]: K per output
            macs[node.name] = int(np.prod(out[1:])) * int(w[0])
    return macs


def layer_groups(model, describe: dict | None = None) -> list[LayerGroup]:
    """The groups of ``model`` (an onnx.ModelProto) in graph order; ``describe`` names what wrote a group."""
    head_row, macs = _head_row(model), node_macs(model)
    groups: dict[str, LayerGroup] = {}
    for node in model.graph.node:
        if node.op_type in _SILENT:
            continue
        name = group_name(node.name, head_row)
        group = groups.setdefault(name, LayerGroup(name, description=(describe or {}).get(name.split("/")[0], "")))
        group.nodes.append(node.name)
        group.macs += macs.get(node.name, 0)
    unnamed = [n for n in model.graph.node if not n.name and n.op_type not in _SILENT]
    if unnamed:
        raise ValueError(f"{len(unnamed)} ONNX nodes have no name (e.g. a {unnamed[0].op_type}): layer groups "
                         f"need the names torch.onnx writes; export the file with export.py")
    return list(groups.values())


def describe_rows(model) -> dict[str, str]:
    """{"model.12": "C3", ...}: the module of each YAML row of a torch Model, for ``layer_groups``."""
    rows = getattr(model, "model", None)
    if rows is None:
        return {}
    return {f"model.{i}": type(m).__name__ for i, m in enumerate(rows)}
