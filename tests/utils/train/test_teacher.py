"""The teacher of train.py --teacher (utils/train/teacher.py) and the student's one-forward features."""
import pytest
import torch

from models.yolo import Model, ModelConfigError
from tests.reference import randomize_bn
from tests.support import tiny_detect_model
from utils.checkpoints import save_checkpoint
from utils.train.teacher import Teacher


def _save(model: Model, path):
    save_checkpoint(path, {"model": model.state_dict(), "yaml": model.yaml, "names": model.names})
    return path


@pytest.mark.parametrize("cfg, neck, channels", [
    ("models/yoloxn.yaml", [17, 20, 23], [64, 128, 256]),  # YOLOPAFPN's outputs, the inputs of the stems (24-26)
    ("models/damoyolo_t.yaml", [20, 23, 27], [64, 128, 256]),  # ZeroHead reads the RepGFPN outputs
    ("models/pai_yoloxs_asff_tood3.yaml", [26, 25, 24], [128, 256, 512]),  # TOOD reads the ASFF outputs, P3 first
    ("models/pai_yoloxs_asff.yaml", [26, 25, 24], [128, 256, 512]),  # DetectX's stems read the ASFF outputs
])
def test_neck_outputs_come_with_the_output_of_one_forward(cfg, neck, channels):
    torch.manual_seed(0)
    model = randomize_bn(Model(cfg, nc=3)).eval()
    assert model.neck == neck and model.neck_channels == channels
    x = torch.rand(2, 3, 64, 96) * 255
    out, feats = model(x, neck=True)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    for got, expected in zip(feats, model.neck_features(x)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert [f.shape[1] for f in feats] == channels
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 12), (4, 6), (2, 3)]


def test_a_file_may_name_its_neck_outputs():
    cfg = tiny_detect_model(3).yaml
    assert Model(cfg).neck == [2, 3, 4]  # the input of each level's shared 1x1 stem
    assert Model({**cfg, "neck": [5, 7, 9]}).neck_channels == [8, 8, 8]  # 16 x width 0.25, rounded up to 8
    with pytest.raises(ModelConfigError, match="'neck' lists 2 layers for a head with 3 levels"):
        Model({**cfg, "neck": [2, 3]})
    with pytest.raises(ModelConfigError, match="'neck' must list layer indices below the head's"):
        Model({**cfg, "neck": [2, 3, 11]})
    joined = {**cfg, "head": cfg["head"][:-1] + [[[4, 4], 1, "Concat", [1]],
                                                 [[5, 6, 7, 8, 9, 11], 1, "DetectX", ["nc", 1]]]}
    model = Model(joined)  # the third level's reg input is a Concat: the model builds, distilling it cannot
    assert model.neck == [] and model.eval()(torch.zeros(1, 3, 64, 64)).shape[0] == 1
    with pytest.raises(ModelConfigError, match="head inputs 9 and 11 share no single-input ancestor"):
        model(torch.zeros(1, 3, 64, 64), neck=True)


@pytest.mark.parametrize("cfg", ["models/yoloxs.yaml", "models/damoyolo_t.yaml"])  # BN folded; RepConvs folded
def test_teacher_is_frozen_folded_and_gives_the_models_features(tmp_path, cfg):
    torch.manual_seed(0)
    source = randomize_bn(Model(cfg, nc=4)).eval()
    student = Model("models/yoloxn.yaml", nc=8)  # another family, other classes and channels: only strides matter
    teacher = Teacher.load(_save(source, tmp_path / "t.pt"), None, student, "cpu")
    assert teacher.channels == source.neck_channels and teacher.params == sum(p.numel() for p in source.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.model.modules())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    x = (torch.rand(2, 3, 64, 64) * 255).requires_grad_()
    feats = teacher.features(x)
    assert all(f.grad_fn is None for f in feats)  # nothing of the teacher enters the student's graph
    with torch.no_grad():
        expected = source.neck_features(x)
    for got, want in zip(feats, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert teacher.calls == 1 and teacher.seconds > 0
    assert "ms per batch" in teacher.cost(1.0, 4) and teacher.calls == 0  # the report resets the clock


def test_teacher_with_other_strides_is_refused(tmp_path):
    deeper = tiny_detect_model(4)
    deeper.yaml["backbone"].insert(0, [-1, 1, "Conv", [16, 3, 2]])  # one more stride-2 conv: strides 16, 32, 64
    for row in deeper.yaml["head"]:
        row[0] = [f + 1 for f in row[0]] if isinstance(row[0], list) else row[0] + 1
    teacher = Model(deeper.yaml)
    assert [int(s) for s in teacher.stride] == [16, 32, 64]
    with pytest.raises(ValueError, match=r"--teacher .*t.pt: its levels have strides \[16, 32, 64\], the student's \[8, 16, 32\]"):
        Teacher.load(_save(teacher, tmp_path / "t.pt"), None, tiny_detect_model(4), "cpu")


def test_missing_teacher_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="--teacher: weights not found"):
        Teacher.load(tmp_path / "none.pt", None, tiny_detect_model(4), "cpu")
