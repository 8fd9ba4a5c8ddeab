"""val.py: the command line parses and runs the evaluation engine, writing what it claims."""
import re

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
