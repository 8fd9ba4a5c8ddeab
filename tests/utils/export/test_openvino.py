"""utils/export/openvino.py: the IR of the verified ONNX file, NNCF int8, both run on OpenVINO's CPU and
compared with torch. Skipped when openvino / nncf are not installed (CI does not install them)."""
from collections import Counter

import numpy as np
import pytest
import torch
import yaml

import export
from models.heads.yolox import YOLOXDecoder
from tests.support import EXPORT_SIZE as IMGSZ
from tests.support import image_batch
from utils.infer.outputs import OutputFormat

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_openvino_export_and_int8(tiny, tmp_path):
    pytest.importorskip("openvino", reason="openvino not installed (pip install openvino nncf)")
    pytest.importorskip("nncf", reason="nncf not installed (pip install openvino nncf)")
    from utils.infer.openvino_runtime import openvino_runner, read_openvino_metadata

    path, model, data = tiny
    res = export.run(weights=path, include=("openvino",), img_size=IMGSZ, deploy=True, int8=True, data=data,
                     calib_images=3, output=tmp_path / "m.onnx")
    xml, int8_xml = res["openvino"], res["openvino_int8"]
    assert (xml.name, int8_xml.name) == ("m.xml", "m.int8.xml") and xml.with_suffix(".bin").exists()
    assert res["onnx"].exists() and "int8" not in res  # the ONNX it converts; the QDQ ONNX only with onnx included
    meta = read_openvino_metadata(xml)
    assert meta["layout"] == "per-level" and yaml.safe_load(meta["stride"]) == [8, 16, 32]
    assert read_openvino_metadata(int8_xml)["quantization"].startswith("int8 (NNCF")
    # the float32 IR is the model: outputs, decoded boxes and scores, detections
    fp32 = res["openvino_fp32_comparison"]
    assert fp32.cosine > 0.99999 and fp32.agreement.share > 0.97 and fp32.source == "val images"
    x = image_batch()
    with torch.no_grad():
        want = model(x)
    fmt = OutputFormat("per-level", (8, 16, 32), YOLOXDecoder())
    got = fmt.decode(openvino_runner(xml, fmt.names)(x.numpy()))
    assert (got[..., :4] - want[..., :4]).abs().max() <= 1e-3 * want[..., :4].abs().max()
    np.testing.assert_allclose(got[..., 4:], want[..., 4:], atol=1e-3)
    # val.py / detect.py / Detector load the IR like an ONNX file (utils.infer.backends.load_weights)
    from utils.infer.backends import OpenVinoModel, load_weights

    ir, letterbox = load_weights(xml, imgsz=IMGSZ)
    assert isinstance(ir, OpenVinoModel) and letterbox == "center" and ir.names == ["a", "b", "c"]  # the checkpoint's
    loaded = ir(x)
    assert loaded.shape == want.shape
    np.testing.assert_allclose(loaded[..., 4:], want[..., 4:], atol=1e-3)
    with pytest.raises(ValueError, match="--img-size"):
        load_weights(xml, imgsz=IMGSZ + 32)
    # the int8 IR: quantised convs, measured on the 2 val images (a random model calibrated on 3 images: the
    # figures are loose; utils.export.compare's own tests pin the arithmetic)
    import openvino as ov

    ops = Counter(op.get_type_name() for op in ov.Core().read_model(str(int8_xml)).get_ops())
    assert ops["FakeQuantize"] >= ops["Convolution"] > 50
    q = res["openvino_comparison"]
    assert q.path == int8_xml and q.n_images == 2 and q.agreement.n_ref == 200 and q.agreement.matched > 0
    cos = {n: c for n, _, _, c in q.lines}
    assert set(cos) >= {"reg_s8", "cls_s32", "decoded boxes (px)", "decoded scores"}
    assert cos["decoded boxes (px)"] > 0.99 and cos["decoded scores"] > 0.8


def test_openvino_int8_keeps_the_decoding_in_float(tiny, tmp_path):
    """The split layout decodes in the graph: NNCF's ignored scope takes its decoding (as the int8 ONNX keeps it
    float), so no FakeQuantize sits on an op that came from it and the scores keep their precision."""
    pytest.importorskip("openvino", reason="openvino not installed (pip install openvino nncf)")
    pytest.importorskip("nncf", reason="nncf not installed (pip install openvino nncf)")
    import onnx
    import openvino as ov

    from utils.infer.openvino_runtime import read_openvino_metadata
    from utils.quant.decode_tail import decode_nodes
    from utils.quant.hybrid_config import openvino_ignored_names

    path, _, data = tiny
    res = export.run(weights=path, include=("openvino",), img_size=IMGSZ, deploy=True, deploy_outputs="split",
                     int8=True, data=data, calib_images=3, output=tmp_path / "s.onnx")
    int8, graph = ov.Core().read_model(str(res["openvino_int8"])), onnx.load(str(res["onnx"]))
    decoding = set(openvino_ignored_names(int8, graph, decode_nodes(graph)))
    assert decoding and "decoding (" in read_openvino_metadata(res["openvino_int8"])["quantization"]
    fed_by_fq = {target.get_node().get_friendly_name() for op in int8.get_ops() if op.get_type_name() == "FakeQuantize"
                 for target in op.output(0).get_target_inputs()}
    assert fed_by_fq and not fed_by_fq & decoding
    assert {n: c for n, _, _, c in res["openvino_comparison"].lines}["scores"] > 0.8


@pytest.mark.parametrize("kwargs,first,min_cosine", [
    ({"deploy": True, "deploy_outputs": "split", "dynamic": ("batch",)}, ["boxes", "scores"], 0.9999),
    # NMS rows: near-equal scores may swap places, which moves rows of the padded outputs
    ({"nms": True, "opset": 11, "conf_thres": 0.05}, ["num_dets", "boxes", "scores", "classes"], 0.99),
], ids=["split-dynamic", "nms"])
def test_openvino_float32_layouts_without_data(tiny, tmp_path, kwargs, first, min_cosine):
    pytest.importorskip("openvino", reason="openvino not installed (pip install openvino nncf)")
    path, _, _ = tiny
    res = export.run(weights=path, include=("openvino",), img_size=IMGSZ, output=tmp_path / "s.onnx", **kwargs)
    c = res["openvino_comparison"]
    assert "openvino_int8" not in res and c.source.startswith("random inputs") and c.agreement.n_ref > 0
    assert [n for n, *_ in c.lines][:len(first)] == first and c.cosine > min_cosine and c.agreement.share > 0.97


@pytest.mark.parametrize("name", ["pai_yoloxs_asff_tood3", "pai_yoloxs_asff_sim", "pai_yoloxs_gsconv", "damoyolo_t",
                                  "damoyolo_m"])
def test_yolox_pai_and_damo_files_convert(tmp_path, name):
    """GroupNorm, ASFF's Splits, ASFF_sim's strided Slices, GSConv's shuffle and ZeroHead's per-level GFL outputs
    through OpenVINO (random weights)."""
    pytest.importorskip("openvino", reason="openvino not installed (pip install openvino nncf)")
    res = export.run(cfg=f"models/{name}.yaml", include=("openvino",), img_size=IMGSZ, deploy=True,
                     output=tmp_path / f"{name}.onnx")
    assert res["openvino"].exists() and res["openvino_comparison"].cosine > 0.99999  # the float32 IR
