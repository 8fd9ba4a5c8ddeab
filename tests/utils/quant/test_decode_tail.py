"""utils/quant/decode_tail.py: which nodes of an exported detector are its decoding (kept in float by int8)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import export
from tests.support import EXPORT_SIZE as IMGSZ
from utils.quant.decode_tail import WEIGHTED, decode_nodes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _graph():
    """x -> conv_a -> Sigmoid (a map's activation) -> Reshape -> Concat -> out
          x -> conv_b -> Mul by a scalar (a learnt scale) -> Mul by a [1, 4] tensor (decoding) -> Reshape -> Concat"""
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "scale")
    stride = numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32), "stride")
    shape = numpy_helper.from_array(np.array([1, 4, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a"),
             helper.make_node("Sigmoid", ["a"], ["a_sig"], name="sig_a"),
             helper.make_node("Conv", ["x", "w"], ["b"], name="conv_b"),
             helper.make_node("Mul", ["b", "scale"], ["b_scaled"], name="scale_b"),
             helper.make_node("Mul", ["b_scaled", "stride"], ["b_px"], name="stride_b"),
             helper.make_node("Reshape", ["a_sig", "shape"], ["a_flat"], name="flat_a"),
             helper.make_node("Reshape", ["b_px", "shape"], ["b_flat"], name="flat_b"),
             helper.make_node("Concat", ["a_flat", "b_flat"], ["out"], name="cat", axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16])],
                              initializer=[w, scale, stride, shape])
    return helper.make_model(graph)


def test_tail_after_the_last_convs_less_the_maps_own_activation_and_scale():
    assert decode_nodes(_graph()) == ["stride_b", "flat_a", "flat_b", "cat"]


@pytest.mark.parametrize("cfg", ["models/yoloxn.yaml", "models/damoyolo_t.yaml"])
def test_per_level_has_no_decoding_and_split_outputs_come_from_it(cfg, tmp_path):
    files = {layout: export.run(cfg=cfg, img_size=IMGSZ, deploy=True, deploy_outputs=layout, report=False,
                                output=tmp_path / f"{layout}.onnx")["onnx"] for layout in ("per-level", "split", "decoded")}
    assert decode_nodes(onnx.load(str(files["per-level"]))) == []
    for layout in ("split", "decoded"):
        model = onnx.load(str(files[layout]))
        tail = set(decode_nodes(model))
        by_name = {n.name: n for n in model.graph.node}
        assert tail and not any(by_name[n].op_type in WEIGHTED for n in tail)
        producers = {out: n.name for n in model.graph.node for out in n.output}
        assert all(producers[o.name] in tail for o in model.graph.output), layout  # the outputs are decoded
        sigmoids_on_convs = [n.name for n in model.graph.node if n.op_type == "Sigmoid"
                             and by_name.get(producers.get(n.input[0]), n).op_type == "Conv"]
        assert sigmoids_on_convs and not tail & set(sigmoids_on_convs)  # maps' activations stay in the network
