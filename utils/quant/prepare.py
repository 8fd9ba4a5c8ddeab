"""A detection model made ready for quantisation-aware training: BatchNorm folded into the convs first,
as every toolchain folds it, then fake quantisation wherever an 8-bit toolchain quantises.

    qat = prepare_qat(model, SCHEMES["rknn"], example=torch.zeros(1, 3, 320, 320))
    preds = qat(images)             # training: the head's raw outputs, through fake-quantised layers
    ExportModel(qat.eval(), "per-level")    # export: Q/DQ pairs with the observed ranges (utils/quant)

Where the quantisers go (the layers up to the head are traced with torch.fx; ``QUANT_POINTS`` in order):
- every conv's weights, symmetric per output channel (utils/quant/fake_quant.py);
- the input image and the output of every op that computes new values (conv, add, mul, cat, sigmoid,
  softmax, normalisation): toolchains requantise there;
- SiLU as the two ops a toolchain sees, Sigmoid and Mul, each quantised: that is what it costs in 8 bits;
- not after ReLU-like activations' producers: a conv (or add) feeding only a ReLU is fused with it,
  so the one grid is after the ReLU;
- not after ops that move values without computing new ones (slices, reshapes, max pooling, nearest
  upsampling): their outputs stay on their input's grid, which is written again (the same scale and zero
  point, ``SameGrid``) where such an output feeds an op that computes: toolchains fuse a conv, add or mul
  into int8 only where every input comes from a DequantizeLinear (ASFF's max-pooled and upsampled levels);
- inside the head (not traced), the outputs of its convs and its SiLUs (as Sigmoid and Mul); a head conv
  that reads a quantiser's output (a neck output, a head SiLU's, or a head conv's through a fused ReLU) is
  linked to that quantiser for its int32 bias, found by running one example.
"""
from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from utils.quant.fake_quant import ActivationQuantizer, QuantScheme, quantize_bias, quantize_weight, weight_scales

FUSED_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh)
FUSED_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.leaky_relu, F.hardtanh)
GRID_KEEPING_MODULES = (nn.MaxPool2d, nn.Upsample, nn.Identity, nn.Dropout, nn.Flatten, nn.ZeroPad2d)
GRID_KEEPING_FUNCTIONS = (operator.getitem, torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.chunk,
                          torch.split, torch.squeeze, torch.unsqueeze, F.max_pool2d, F.pad)
VANISHING_MODULES = (nn.Identity, nn.Dropout)  # grid-keeping modules that leave no op in an exported file
GRID_KEEPING_METHODS = ("reshape", "view", "permute", "transpose", "flatten", "contiguous", "chunk", "split",
                        "squeeze", "unsqueeze", "unflatten", "expand", "repeat")


class QuantConv2d(nn.Conv2d):
    """A Conv2d whose weights are fake-quantised per output channel and, once its input's quantiser is known
    (``input_quantizer``, linked by prepare_qat in the traced layers), its bias as int32 on the grid input
    scale x weight scale, as toolchains hold it; with an output quantiser (convs outside the traced graph, in
    the head) its output too."""

    def __init__(self, conv: nn.Conv2d, scheme: QuantScheme | None = None):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        self.load_state_dict(conv.state_dict())
        self.weight.requires_grad_(True)
        if self.bias is not None:
            self.bias.requires_grad_(True)
        self.output = ActivationQuantizer(scheme) if scheme is not None else None
        self._input = ()  # (ActivationQuantizer,) once linked; a tuple, so not a submodule (nor in state_dict)

    @property
    def input_quantizer(self) -> ActivationQuantizer | None:
        return self._input[0] if self._input else None

    def link_input(self, quantizer: ActivationQuantizer) -> None:
        self._input = (quantizer,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        if bias is not None and self._input:
            q = self._input[0]
            input_scale = q.grid()[0] if torch.jit.is_tracing() or not q.training else \
                q.scheme.scale_zero_point(q.lo, q.hi)[0]
            bias = quantize_bias(bias, input_scale, weight_scales(self.weight))
            if torch.jit.is_tracing():  # the exported file holds the int32-exact bias as one constant
                bias = torch.tensor(bias.tolist(), dtype=bias.dtype, device=bias.device)
        y = self._conv_forward(x, quantize_weight(self.weight), bias)
        return self.output(y) if self.output is not None else y


class QuantSiLU(nn.Module):
    """x * sigmoid(x) as Sigmoid then Mul, each output on its own 8-bit grid."""

    def __init__(self, scheme: QuantScheme):
        super().__init__()
        self.sigmoid = ActivationQuantizer(scheme)
        self.mul = ActivationQuantizer(scheme)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mul(x * self.sigmoid(torch.sigmoid(x)))


class SameGrid(nn.Module):
    """An earlier quantiser's grid written again after an op that keeps it (max pooling, nearest resizing, a
    slice): in training an identity (the values are on that grid already), in export Q/DQ with that
    quantiser's scale and zero point, so the next op reads a DequantizeLinear. Holds no state of its own."""

    def __init__(self, quantizer: ActivationQuantizer):
        super().__init__()
        self._source = (quantizer,)  # a tuple: not a submodule, so not in state_dict (old checkpoints load)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            return x
        q = self._source[0]
        scale, zero_point = q.grid()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, q.scheme.qmin, q.scheme.qmax)


class QATModel(nn.Module):
    """The fake-quantised layers up to the head (``body``, a GraphModule) and the head; the interface
    of models.yolo.Model that training, validation and export use (forward, features, detect, stride)."""

    def __init__(self, body: fx.GraphModule, model: nn.Module, scheme: QuantScheme):
        super().__init__()
        self.body, self.head = body, model.detect
        self.scheme = scheme
        self.stride, self.nc, self.names, self.yaml = model.stride, model.nc, model.names, model.yaml
        self.input_norm = None  # inside the body

    @property
    def detect(self):
        return self.head

    def features(self, x: torch.Tensor):
        return self.body(x)

    def forward(self, x: torch.Tensor):
        return self.head(self.body(x))

    def fuse(self) -> "QATModel":
        """Already folded (exporters call this on every model)."""
        return self

    def describe(self) -> str:
        return (f"int8 QDQ from quantisation-aware training ({self.scheme.name}: {self.scheme.toolchains}; "
                f"{len(self.quantizers())} activation ranges learnt in training, weights symmetric per channel)")

    def quantizers(self) -> list[ActivationQuantizer]:
        return [m for m in self.modules() if isinstance(m, ActivationQuantizer)]


class _FeaturesOf(nn.Module):
    """What gets traced: a Model's layers up to its head."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QuantConv2d, ActivationQuantizer)) or super().is_leaf_module(m, qualname)


def prepare_qat(model: nn.Module, scheme: QuantScheme, example: torch.Tensor) -> QATModel:
    """A fake-quantised copy of ``model`` (a models.yolo.Model); ``example`` [1, 3, H, W] is one input, used to
    tell tensors from shapes in the traced graph. The copy is folded first: train it, not the original."""
    model = copy.deepcopy(model).eval().fuse()
    _swap_convs(model, head=model.detect, scheme=scheme)
    _swap_head_activations(model.detect, scheme)
    root = _FeaturesOf(model)
    graph = _Tracer().trace(root)
    body = fx.GraphModule(root, graph)
    ShapeProp(body).propagate(example)
    _insert_quantizers(body, scheme)
    _repeat_kept_grids(body)
    _link_conv_inputs(body)
    qat = QATModel(body, model, scheme)
    _link_head_conv_inputs(qat, example)
    return qat.train()


def _swap_convs(model: nn.Module, head: nn.Module, scheme: QuantScheme) -> None:
    """Every Conv2d becomes a QuantConv2d; those in the head also quantise their outputs."""
    in_head = {id(m) for m in head.modules()} if head is not None else set()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                setattr(parent, name, QuantConv2d(child, scheme if id(child) in in_head else None))


def _swap_head_activations(head: nn.Module, scheme: QuantScheme) -> None:
    """A head that owns stems and branches (YOLOXHead) quantises its activations as the traced layers do:
    SiLU as Sigmoid and Mul; a conv block's ReLU-like activation fused with its conv (the conv's grid moved
    after it), or, behind a norm that does not fold (TOOD's GroupNorm), given a grid of its own."""
    for parent in list(head.modules()):
        conv, act = getattr(parent, "conv", None), getattr(parent, "act", None)
        if isinstance(conv, QuantConv2d) and conv.output is not None and isinstance(act, FUSED_ACTIVATIONS):
            fused = all(isinstance(m, nn.Identity) for name, m in parent.named_children() if name not in ("conv", "act"))
            parent.act = nn.Sequential(act, conv.output if fused else ActivationQuantizer(scheme))
            if fused:
                conv.output = None
        for name, child in list(parent.named_children()):
            if type(child) is nn.SiLU:
                setattr(parent, name, QuantSiLU(scheme))


def _insert_quantizers(gm: fx.GraphModule, scheme: QuantScheme) -> None:
    count = 0

    def add_quantizer(after: fx.Node) -> fx.Node:
        nonlocal count
        name = f"quant_{count}"
        count += 1
        gm.add_submodule(name, ActivationQuantizer(scheme))
        with gm.graph.inserting_after(after):
            q = gm.graph.call_module(name, (after,))
        after.replace_all_uses_with(q, delete_user_cb=lambda user: user is not q)
        return q

    for node in list(gm.graph.nodes):
        if not _is_float_tensor(node):
            continue
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.SiLU):
            _replace_silu(gm, node, scheme)
            continue
        if node.op == "placeholder" or (_computes_values(gm, node) and not _feeds_only_a_fused_activation(gm, node)):
            add_quantizer(node)
    gm.graph.lint()
    gm.recompile()


def _repeat_kept_grids(gm: fx.GraphModule) -> None:
    """Each grid-keeping node whose output an op that computes reads gets a SameGrid of the quantiser it
    descends from, between the two (one per node, shared by its computing readers)."""
    count = 0
    for node in list(gm.graph.nodes):
        if not _is_float_tensor(node) or _computes_values(gm, node) or node.op in ("placeholder", "output") \
                or _is_quantizer(gm, node) or _is_same_grid(gm, node) or _is_quantized_silu(gm, node):
            continue
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), VANISHING_MODULES):
            continue  # no op in the exported file: its reader reads the DequantizeLinear before it
        readers = [u for u in node.users if _computes_values(gm, u) or _is_quantized_silu(gm, u)]
        grid = _grid_of(gm, node)
        if not readers or grid is None:
            continue
        name = f"same_grid_{count}"
        count += 1
        gm.add_submodule(name, SameGrid(grid))
        with gm.graph.inserting_after(node):
            repeat = gm.graph.call_module(name, (node,))
        for reader in readers:
            reader.replace_input_with(node, repeat)
    gm.graph.lint()
    gm.recompile()


def _grid_of(gm: fx.GraphModule, node: fx.Node) -> ActivationQuantizer | None:
    """The quantiser whose grid ``node``'s output is on (a quantised SiLU's is its Mul's), back through
    grid-keeping ops; None where a float op or the graph's input comes first."""
    while isinstance(node, fx.Node):
        if _is_quantizer(gm, node):
            return gm.get_submodule(node.target)
        if _is_quantized_silu(gm, node):
            return gm.get_submodule(node.target).mul
        if _computes_values(gm, node) or node.op == "placeholder" or not node.args:
            return None
        node = node.args[0]
    return None


def _link_conv_inputs(gm: fx.GraphModule) -> None:
    """Each traced conv learns the quantiser whose grid its input is on (through grid-keeping ops such as
    slices, max pooling and nearest upsampling; after a SiLU, its Mul's), for its int32 bias."""
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), QuantConv2d):
            continue
        grid = _grid_of(gm, node.args[0])
        if grid is not None:
            gm.get_submodule(node.target).link_input(grid)


def _link_head_conv_inputs(qat: QATModel, example: torch.Tensor) -> None:
    """The head is not traced, so its convs learn their input's quantiser by running ``example`` once: a head
    conv whose input is a quantiser's output tensor (a neck output, a head SiLU's or conv's) is linked to it,
    also through a ReLU-like activation, which keeps its input's grid; one behind other float ops (GroupNorm,
    attention) keeps a float bias. The quantisers' state is restored: nothing is observed."""
    quantizers = qat.quantizers()
    saved = [(q.lo.clone(), q.hi.clone(), q.initialised.clone()) for q in quantizers]
    produced = {}  # id(output tensor) -> (quantiser, tensor): the tensor kept alive so its id stays unique

    def grid_kept(_, args, out):
        source = produced.get(id(args[0]))
        if source is not None:
            produced[id(out)] = (source[0], out)

    hooks = [q.register_forward_hook(lambda m, _, out: produced.__setitem__(id(out), (m, out))) for q in quantizers]
    hooks += [m.register_forward_hook(grid_kept) for m in qat.head.modules() if isinstance(m, FUSED_ACTIVATIONS)]

    def link(conv, args):
        source = produced.get(id(args[0]))
        if source is not None:
            conv.link_input(source[0])

    head_convs = [m for m in qat.head.modules() if isinstance(m, QuantConv2d)]
    hooks += [c.register_forward_pre_hook(link) for c in head_convs]
    was_training = qat.training
    try:
        with torch.no_grad():
            qat.eval()(example)
    finally:
        for h in hooks:
            h.remove()
        for q, (lo, hi, initialised) in zip(quantizers, saved):
            q.lo.copy_(lo)
            q.hi.copy_(hi)
            q.initialised.copy_(initialised)
        qat.train(was_training)


def _is_quantizer(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), ActivationQuantizer)


def _is_same_grid(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), SameGrid)


def _is_quantized_silu(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), QuantSiLU)


def _replace_silu(gm: fx.GraphModule, node: fx.Node, scheme: QuantScheme) -> None:
    gm.add_submodule(node.target, QuantSiLU(scheme))  # same name: the graph node now calls the quantised SiLU


def _is_float_tensor(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "dtype") and meta.dtype.is_floating_point


def _computes_values(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, (ActivationQuantizer, QuantSiLU, SameGrid)) or isinstance(m, GRID_KEEPING_MODULES):
            return False
        return not (isinstance(m, nn.Upsample) and m.mode != "nearest")
    if node.op == "call_function":
        if node.target is F.interpolate:
            return node.kwargs.get("mode", "nearest") != "nearest"
        return node.target not in GRID_KEEPING_FUNCTIONS
    if node.op == "call_method":
        return node.target not in GRID_KEEPING_METHODS
    return False  # placeholders, get_attr (constants: folded into their consumers), outputs


def _feeds_only_a_fused_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True if ``node``'s one consumer is a ReLU-like activation, also through identities between them (the
    nn.Identity that folding BatchNorm leaves in a Conv block): the toolchain fuses the two, one grid after."""
    users = list(node.users)
    while len(users) == 1 and users[0].op == "call_module" and \
            isinstance(gm.get_submodule(users[0].target), (nn.Identity, nn.Dropout)):
        users = list(users[0].users)
    if len(users) != 1:
        return False
    user = users[0]
    if user.op == "call_module":
        return isinstance(gm.get_submodule(user.target), FUSED_ACTIVATIONS)
    return user.op == "call_function" and user.target in FUSED_FUNCTIONS
