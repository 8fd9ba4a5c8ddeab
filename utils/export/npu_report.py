"""An NPU readiness report of an ONNX file: what an 8-bit NPU converter will see.

    report = npu_report("yoloxs_rslu.onnx"); print(report.text())

- opset, inputs and outputs with shapes and types, parameters and file size;
- a histogram of op types (Constant nodes left out);
- activations: Conv+Relu pairs (a Relu, LeakyRelu or Clip whose input is a Conv output read by
  nothing else: fusable into the conv on 8-bit NPUs), against Sigmoid+Mul pairs (SiLU written
  x * sigmoid(x): two elementwise ops on the full feature map, not fusable), and lone Sigmoids;
- ops outside a conservative set that 8-bit NPU converters (ACUITY / A311D, rknn-toolkit2, OpenVINO,
  TensorRT) take without CPU fallback, each with what to do about it.

This is where relu_silu pays: yoloxs has every activation a SiLU pair, yoloxs_rslu turns most of
them into fusable Conv+Relu.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Ops that the 8-bit NPU converters above accept and run on the accelerator. Conservative on purpose.
NPU_SAFE_OPS = frozenset({
    "Conv", "ConvTranspose", "Relu", "LeakyRelu", "Clip", "PRelu", "Sigmoid", "HardSigmoid", "Mul", "Add",
    "Sub", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Resize", "Upsample", "Reshape",
    "Transpose", "Flatten", "Softmax", "BatchNormalization", "Gemm", "MatMul", "Pad", "Identity",
    "QuantizeLinear", "DequantizeLinear",
})
FUSABLE_ACTIVATIONS = ("Relu", "LeakyRelu", "Clip")  # Clip(0, 6) = ReLU6
_TAIL = "the decoding / --nms tail: runs on the CPU or runtime (--deploy per-level outputs: a conv-only graph)"
_SHAPES = "shape arithmetic of dynamic axes or of the --nms tail"
ADVICE = {
    "Exp": "box decoding in the graph: --deploy (per-level outputs, the default) decodes on the CPU",
    "ScatterND": "an in-place slice write: build tensors with Concat",
    "NonMaxSuppression": _TAIL, "TopK": _TAIL, "Gather": _TAIL, "Div": _TAIL, "Split": _TAIL,
    "HardSwish": "not on older NPUs: use relu or silu",
    **{op: _SHAPES for op in ("Shape", "Range", "NonZero", "Cast", "ConstantOfShape", "Expand", "Unsqueeze",
                              "Squeeze", "Equal", "Where", "ReduceSum", "Greater")},
}
FOCUS_ADVICE = "Focus's strided slices of the input: export with --focus-conv"
BODY_ADVICE = {  # Slice / Split nodes inside the network (their outputs feed convs)
    "Split": ("in the network (channel splits: ASFF's level weights, the TOOD head's layer attention; YOLOv8's C2f "
              "splits channels the same way): the NPU converters above take them"),
    "Slice": ("in the network (strided slices: ASFF_sim's space-to-depth and channel-pair means): Focus's op, which "
              "some 8-bit NPUs run on the CPU; ASFF mode 'asff' has none"),
}
GROUP_NORM_ADVICE = ("GroupNorm (the TOOD head's task-interactive convs), written as InstanceNormalization between "
                     "Reshapes: statistics of the feature map at run time, which 8-bit NPUs run slowly or on the "
                     "CPU; a head without it (pai_yoloxs_asff's) avoids this")
INPUT_NORM_SCOPE = "/input_norm/"  # torch.onnx names nodes by module path: the model file's ``input`` step


@dataclass
class NpuReport:
    path: Path
    opset: int
    inputs: list = field(default_factory=list)  # (name, shape, type)
    outputs: list = field(default_factory=list)
    op_counts: Counter = field(default_factory=Counter)
    conv_relu: int = 0  # Conv followed by a fusable activation (Relu, LeakyRelu, Clip), the conv read once
    silu: int = 0  # Sigmoid + Mul pairs, x * sigmoid(x)
    silu_after_conv: int = 0  # of those, how many act on a Conv output
    lone_sigmoid: int = 0  # Sigmoids that are not half of a SiLU (e.g. the obj / cls outputs)
    input_slices: int = 0  # Slices of the graph input (directly or of a slice of it): Focus's space-to-depth
    input_norm: Counter = field(default_factory=Counter)  # ops of the model's input normalisation (order, mean, std)
    body: Counter = field(default_factory=Counter)  # Slice / Split nodes whose outputs reach a Conv (not the tail)
    params: int = 0
    file_size: int = 0
    metadata: dict = field(default_factory=dict)

    @property
    def outside(self) -> Counter:
        """Op types outside NPU_SAFE_OPS, with counts (the input normalisation apart: it has its own line)."""
        return Counter({op: n - self.input_norm[op] for op, n in self.op_counts.items()
                        if op not in NPU_SAFE_OPS and n > self.input_norm[op]})

    def text(self) -> str:
        lines = [f"NPU readiness report: {self.path.name} ({self.file_size / 1e6:.1f} MB, {self.params:,} parameters)",
                 f"  opset {self.opset}" + (f", layout {self.metadata['layout']}" if "layout" in self.metadata else "")]
        lines += [f"  input  {n:<10} {s} {t}" for n, s, t in self.inputs]
        lines += [f"  output {n:<10} {s} {t}" for n, s, t in self.outputs]
        total = sum(self.op_counts.values())
        hist = ", ".join(f"{op} {n}" for op, n in sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"  ops ({total} nodes): {hist}")
        activations = self.conv_relu + self.silu
        share = f" ({100 * self.conv_relu / activations:.0f}% of activations fusable)" if activations else ""
        lines.append(f"  activations: {self.conv_relu} Conv+Relu fusable, {self.silu} Sigmoid+Mul (SiLU) pairs "
                     f"({self.silu_after_conv} after a Conv, not fusable), {self.lone_sigmoid} lone Sigmoid{share}")
        if self.input_norm:
            ops = ", ".join(f"{op} {n}" for op, n in sorted(self.input_norm.items()))
            lines.append(f"  input normalisation in the graph (the model file's input: order, mean, std): {ops}; "
                         "a toolchain can take it as its own channel order and mean/std settings instead")
        if self.outside:
            lines.append("  outside the conservative 8-bit NPU op set:")
            lines += [f"    {op} x{n}" + (f": {self._advice(op)}" if self._advice(op) else "")
                      for op, n in sorted(self.outside.items())]
        else:
            lines.append("  outside the conservative 8-bit NPU op set: none")
        return "\n".join(lines)


    def _advice(self, op: str) -> str:
        if op in ("Slice", "Split"):
            focus = self.input_slices if op == "Slice" else 0
            tail = self.op_counts[op] - focus - self.input_norm[op] - self.body[op]
            return "; ".join(([f"{focus} are {FOCUS_ADVICE}"] if focus else [])
                             + ([f"{self.body[op]} {BODY_ADVICE[op]}"] if self.body[op] else [])
                             + ([f"{tail} in {_TAIL}"] if tail else []))
        if op == "InstanceNormalization":
            return GROUP_NORM_ADVICE
        return ADVICE.get(op, "")


def _shape(value_info) -> list:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _type(value_info) -> str:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type).name


def npu_report(path) -> NpuReport:
    """Read ``path`` (an ONNX file) and count what the report shows."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes = [n for n in graph.node if n.op_type != "Constant"]
    report = NpuReport(path, opset, file_size=path.stat().st_size, op_counts=Counter(n.op_type for n in nodes),
                       metadata={p.key: p.value for p in model.metadata_props})
    initializer_names = {i.name for i in graph.initializer}
    report.inputs = [(i.name, _shape(i), _type(i)) for i in graph.input if i.name not in initializer_names]
    report.outputs = [(o.name, _shape(o), _type(o)) for o in graph.output]
    report.params = sum(_numel(i.dims) for i in graph.initializer)
    _count_activations(report, nodes, {o.name for o in graph.output})
    report.input_norm = Counter(n.op_type for n in nodes if n.name.startswith(INPUT_NORM_SCOPE))
    sliced = {name for name, _, _ in report.inputs}  # the input and slices of it (Focus: one or two Slices each)
    for n in nodes:  # graph order is topological
        if n.op_type == "Slice" and n.input[0] in sliced and not n.name.startswith(INPUT_NORM_SCOPE):
            report.input_slices += 1
            sliced.add(n.output[0])
    feeds_conv = _feeding_convs(nodes)
    report.body = Counter(n.op_type for n in nodes if n.op_type in ("Slice", "Split") and n.output[0] not in sliced
                          and not n.name.startswith(INPUT_NORM_SCOPE) and any(o in feeds_conv for o in n.output))
    return report


def _feeding_convs(nodes) -> set:
    """Names of the tensors from which some Conv is reachable (read in reverse topological order)."""
    reach = set()
    for n in reversed(nodes):
        if n.op_type == "Conv" or any(o in reach for o in n.output):
            reach.update(n.input)
    return reach


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


QDQ = ("QuantizeLinear", "DequantizeLinear")


def _count_activations(report: NpuReport, nodes, graph_outputs: set) -> None:
    """Conv+activation and x * sigmoid(x) pairs; QuantizeLinear/DequantizeLinear between them (a QDQ
    int8 model) are looked through."""
    producer = {out: n for n in nodes for out in n.output}
    readers = Counter(name for n in nodes for name in n.input)
    for name in graph_outputs:
        readers[name] += 1  # a graph output is read by the caller

    def origin(name: str) -> str:
        """The tensor ``name`` is a (de)quantised copy of, or itself."""
        node = producer.get(name)
        while node is not None and node.op_type in QDQ:
            name = node.input[0]
            node = producer.get(name)
        return name

    def made_by(name: str, op: str) -> bool:
        node = producer.get(origin(name))
        return node is not None and node.op_type == op

    for n in nodes:
        if n.op_type in FUSABLE_ACTIVATIONS and made_by(n.input[0], "Conv") and readers[origin(n.input[0])] == 1:
            report.conv_relu += 1
    silu_sigmoids = set()
    for n in nodes:
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        for a, b in (n.input, n.input[::-1]):
            sig = producer.get(origin(b))
            if sig is not None and sig.op_type == "Sigmoid" and origin(sig.input[0]) == origin(a):
                report.silu += 1
                silu_sigmoids.add(sig.output[0])
                report.silu_after_conv += int(made_by(a, "Conv"))
                break
    report.lone_sigmoid = sum(1 for n in nodes if n.op_type == "Sigmoid" and n.output[0] not in silu_sigmoids)
