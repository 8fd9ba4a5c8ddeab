"""The model and data the toolchain tests (OpenVINO, RKNN, options) share."""
import pytest
import torch
import yaml

from tests.support import EXPORT_SIZE as IMGSZ
from tests.support import varied_model
from utils.checkpoints import save_checkpoint
from utils.data.demo import DEMO_NAMES, generate_demo_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(checkpoint path, model, dataset yaml) of a varied yoloxn and a 6-image demo dataset at 160 px."""
    root = tmp_path_factory.mktemp("npu")
    model = varied_model("models/yoloxn.yaml")
    with torch.no_grad():  # box regression of a trained model's size (varied_model()'s reaches exp(12) px): the int8
        for conv in model.detect.reg_preds:  # figures then mean something
            conv.weight.mul_(0.1)
            conv.bias.mul_(0.1)
    path = save_checkpoint(root / "n.pt", {"model": model.state_dict(), "yaml": model.yaml, "names": ["a", "b", "c"]})
    demo = generate_demo_dataset(root / "demo", seed=0, n_train=4, n_val=2, img_size=(IMGSZ, IMGSZ), progress=False)
    data = root / "demo.yaml"
    data.write_text(yaml.safe_dump({"path": str(demo), "train": "images/train", "val": "images/val",
                                    "names": list(DEMO_NAMES)}))
    return path, model, str(data)
