"""val.py: the command line parses and runs the evaluation engine, writing what it claims."""
import re
import subprocess
import sys

import pytest
import torch
import yaml

import val
from models.yolo import Model
from utils.data.demo import DEMO_NAMES, generate_demo_dataset

IMGSZ = 128


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A yaml of 12 demo val images of 96 x 128."""
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, seed=3, n_train=0, n_val=12, img_size=(96, 128), progress=False)
    (root / "plain.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/val", "val": "images/val",
                                                     "names": list(DEMO_NAMES)}))
    return root / "plain.yaml"


def test_checkpoint_from_the_command_line(demo, tmp_path, capsys):
    model = Model("models/yoloxn.yaml", nc=8).eval()
    torch.save({"model": model.state_dict(), "yaml": model.yaml, "names": list(DEMO_NAMES)}, tmp_path / "w.pt")
    results, maps, times = val.main(["--data", str(demo), "--weights", str(tmp_path / "w.pt"), "--img-size",
                                     str(IMGSZ), "--batch-size", "4", "--workers", "0", "--conf-thres", "0",
                                     "--project", str(tmp_path / "runs"), "--save-json", "--classwise"])
    out = capsys.readouterr().out
    assert re.search(r"Speed: [\d.]+ms pre-process, [\d.]+ms inference, [\d.]+ms NMS per image at shape "
                     r"\(4, 3, 128, 128\)", out)
    assert (tmp_path / "runs" / "exp" / "predictions.json").is_file()
    assert (tmp_path / "runs" / "exp" / "results.txt").is_file()


def test_seed_command_parses():
    opt = val.parse_opt("--data data/coco.yaml --weights runs/train/exp/weights/last.pt --batch-size 64 "
                        "--device 0,1 --save-json --classwise".split())
    assert (opt.batch_size, opt.device, opt.save_json, opt.classwise, opt.imgsz) == (64, "0,1", True, True, 640)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device 0,1 asks for CUDA"):
            val.run(data={"names": ["a"], "val": "x"}, weights="last.pt", device="0,1")


def test_user_errors_are_one_line(demo, tmp_path, capsys):
    """A missing file, weights of another nc, a checkpoint that is not weights-only, an option value out of
    range: one line naming the file or option, a non-zero exit, no traceback (--verbose keeps it)."""
    base = ["--data", str(demo), "--img-size", str(IMGSZ), "--workers", "0", "--project", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"^val.py: weights not found: .*missing.pt$"):
        val.main(base + ["--weights", str(tmp_path / "missing.pt")])
    model = Model("models/yoloxn.yaml", nc=3)
    torch.save({"model": model.state_dict(), "yaml": model.yaml}, tmp_path / "nc3.pt")
    with pytest.raises(SystemExit, match=r"^val.py: .*nc3.pt predicts 3 classes but .*plain.yaml names 8"):
        val.main(base + ["--weights", str(tmp_path / "nc3.pt")])
    torch.save({"model": model}, tmp_path / "pickled.pt")  # a pickled module, not plain data
    with pytest.raises(SystemExit, match=r"^val.py: .*pickled.pt: cannot be read as a weights-only checkpoint"):
        val.main(base + ["--weights", str(tmp_path / "pickled.pt")])
    with pytest.raises(SystemExit) as e:
        val.main(base + ["--weights", "w.pt", "--batch-size", "0"])
    assert e.value.code == 2 and "argument --batch-size: must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        val.main(base + ["--weights", str(tmp_path / "missing.pt"), "--verbose"])
    r = subprocess.run([sys.executable, "val.py", *base, "--weights", str(tmp_path / "missing.pt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"val.py: weights not found: {tmp_path / 'missing.pt'}"
