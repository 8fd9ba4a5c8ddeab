"""Exactness against official YOLOX: parameter counts, checkpoint loading, equal eval outputs."""
import pytest
import torch

from models.yolo import Model, load_model
from models import yolox_official
from tests.reference import OFFICIAL_SIZES, build_official, randomize_bn
from utils.checkpoints import save_checkpoint

# Published parameter counts of official YOLOX (80 classes).
OFFICIAL_PARAMS = {
    "yoloxn": 912_159, "yoloxt": 5_055_855, "yoloxs": 8_968_255,
    "yoloxm": 25_326_495, "yoloxl": 54_208_895, "yoloxx": 99_071_455,
}


@pytest.mark.parametrize("name", [*OFFICIAL_PARAMS, "yoloxs_rslu"])
def test_parameter_counts_equal_official(name):
    model = Model(f"models/{name}.yaml")
    expected = OFFICIAL_PARAMS[name.replace("_rslu", "")]
    assert sum(p.numel() for p in model.parameters()) == expected


def test_dense_nano_parameter_count_equals_official_nano_without_depthwise(yolox_pkg):
    """yoloxn_dense has no published count: it is official YOLOX-Nano's exp with depthwise=False."""
    official = sum(p.numel() for p in build_official("yoloxn_dense").parameters())
    assert sum(p.numel() for p in Model("models/yoloxn_dense.yaml").parameters()) == official == 2_257_055


def test_gflops_near_published():
    # published: nano 1.08 / tiny 6.45 at 416, s 26.8 at 640 (thop); flop_counter counts convs only
    assert Model("yoloxn.yaml").gflops(416) == pytest.approx(1.08, rel=0.04)
    assert Model("yoloxt.yaml").gflops(416) == pytest.approx(6.45, rel=0.02)
    assert Model("yoloxs.yaml").gflops(640) == pytest.approx(26.8, rel=0.01)


def test_state_dict_keys_match_the_official_key_list():
    """Converted keys and shapes equal ../shared/reference's yolox-s list (or the official model)."""
    ours = yolox_official.project_to_official(Model("yoloxs.yaml").state_dict())
    reference = _reference_key_list()
    assert len(reference) == 462
    assert {k: tuple(v.shape) for k, v in ours.items()} == reference


def _reference_key_list():
    """Key -> shape of official yolox-s (a copy of ../shared/reference/yolox_s_state_dict_keys.tsv)."""
    from pathlib import Path

    keys = {}
    for line in (Path(__file__).parents[1] / "data" / "yolox_s_state_dict_keys.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        keys[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return keys


def official_checkpoint(tmp_path, name, nc=80, seed=0):
    torch.manual_seed(seed)
    official = randomize_bn(build_official(name, nc=nc), seed=seed).eval()
    path = tmp_path / f"{name}.pth"
    torch.save({"model": official.state_dict(), "start_epoch": 300}, path)
    return official, path


@pytest.mark.parametrize("name", list(OFFICIAL_SIZES))
def test_official_checkpoint_loads_and_outputs_match(yolox_pkg, tmp_path, name):
    official, path = official_checkpoint(tmp_path, name)
    ours = load_model(path)  # the model file is inferred from the checkpoint's shapes
    assert ours.yaml["yaml_file"] == f"{name}.yaml" and ours.official
    x = torch.rand(2, 3, 96, 128) * 4
    with torch.no_grad():
        expected, actual = official(x), ours(x)
    assert actual.shape == expected.shape == (2, 12 * 16 + 6 * 8 + 3 * 4, 85)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_official_checkpoint_with_other_nc_and_explicit_cfg(yolox_pkg, tmp_path):
    official, path = official_checkpoint(tmp_path, "yoloxs", nc=3)
    ours = load_model(path, cfg="models/yoloxs.yaml")
    assert ours.nc == 3 and ours.detect.cls_preds[0].out_channels == 3
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), rtol=1e-5, atol=1e-5)


def test_mismatched_checkpoint_lists_keys_and_shapes(yolox_pkg, tmp_path):
    _, path = official_checkpoint(tmp_path, "yoloxs")
    with pytest.raises(ValueError) as e:
        load_model(path, cfg="models/yoloxm.yaml")
    msg = str(e.value)
    assert "does not fit the model" in msg and "shape mismatches" in msg
    assert "model.0.conv.conv.weight: checkpoint (32, 12, 3, 3) vs model (48, 12, 3, 3)" in msg
    assert "missing keys" in msg  # m has more bottlenecks than s

    state = torch.load(path, weights_only=True)["model"]
    state.pop("head.obj_preds.2.bias")
    state["head.extra.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "edited.pth")
    with pytest.raises(ValueError) as e:
        load_model(tmp_path / "edited.pth")
    msg = str(e.value)
    assert "missing keys (1):\n    model.33.obj_preds.2.bias" in msg
    assert "unexpected keys (1):\n    head.extra.weight" in msg


def test_project_checkpoint_round_trip_is_weights_only(tmp_path):
    model = randomize_bn(Model("yoloxs_rslu.yaml", nc=4)).eval()
    names = ["cat", "dog", "car", "bus"]
    path = save_checkpoint(tmp_path / "w" / "last.pt", {
        "model": model.state_dict(), "ema": None, "yaml": model.yaml, "names": names, "epoch": 3})
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["yaml"]["nc"] == 4
    loaded = load_model(path)
    assert loaded.names == names and not loaded.training and not loaded.official
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_ema_weights_preferred(tmp_path):
    model = Model("yoloxn.yaml", nc=2)
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "ema": ema, "yaml": model.yaml})
    loaded = load_model(path)
    assert torch.equal(loaded.state_dict()["model.0.conv.conv.weight"], ema["model.0.conv.conv.weight"])


def test_pickled_module_checkpoints_are_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(ValueError, match="pickled.pt: cannot be read as a weights-only checkpoint"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="weights not found"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: cannot be read"):
        load_model(tmp_path / "junk.pt")


def test_key_conversion_round_trip():
    state = Model("yoloxn.yaml").state_dict()
    official = yolox_official.project_to_official(state)
    assert "backbone.backbone.dark2.0.dconv.conv.weight" in official
    assert "head.cls_convs.0.1.pconv.bn.running_var" in official
    assert yolox_official.official_to_project(official).keys() == state.keys()
    assert yolox_official.infer_official_cfg(official) == ("yoloxn.yaml", 80)
