import os

import cv2
import numpy as np
import pytest
import torch

from tests.reference import official_yolox
from utils.devices import usable_cores


def pytest_configure(config):
    """Under pytest-xdist (README's `-n auto`) each worker takes its share of the cores, and so do the
    train.py processes a test starts (OMP_NUM_THREADS): torch's default of every core per process
    would put two or more threads on each core, and small convs spin-wait against each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(usable_cores() // workers, 1)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The dataset yaml of a generated 64 x 64 demo set: 16 train and 4 val images, val COCO json."""
    from tests.support import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("tiny"), seed=2, n_train=16, n_val=4, img_size=(64, 64))


@pytest.fixture(scope="session")
def yolox_pkg():
    """The official yolox package; skipped when absent, an error in CI (REQUIRE_REFERENCE=1)."""
    pkg = official_yolox()
    if pkg is None:
        pytest.skip("official yolox package not installed (bash tests/install_reference.sh)")
    return pkg


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: on a small shared CPU, two threads of tiny convs
    spin-wait (100x slower). Use with pytestmark = pytest.mark.usefixtures("one_torch_thread")."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


DETECT_NAMES = ["cat", "dog", "car"]


@pytest.fixture(scope="session")
def detect_weights(tmp_path_factory):
    """A checkpoint of a random yoloxn (3 classes: cat, dog, car) that detects something in every image."""
    from models.yolo import Model
    from tests.reference import randomize_bn
    from utils.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = randomize_bn(Model("models/yoloxn.yaml", nc=3))
    with torch.no_grad():  # scores around 0.35 (not saturated, so no ties), detections in every image
        for conv in model.detect.obj_preds:
            conv.bias.fill_(1.0)
        for conv in model.detect.cls_preds:
            conv.bias.fill_(0.0)
    path = tmp_path_factory.mktemp("w") / "m.pt"
    save_checkpoint(path, {"model": model.state_dict(), "yaml": model.yaml, "names": DETECT_NAMES})
    return path


@pytest.fixture(scope="session")
def detect_images(tmp_path_factory):
    """Two random JPEGs (120 x 200, 150 x 90) and a 3-frame video."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 200), (150, 90)]):
        cv2.imwrite(str(root / f"im{i}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    for _ in range(3):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()
    return root


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Project checkpoints (as the trainer writes them) of varied yoloxn and yoloxs_rslu, 3 classes (a, b, c):
    {name: (path, model)}."""
    from tests.support import varied_model
    from utils.checkpoints import save_checkpoint

    root = tmp_path_factory.mktemp("weights")
    out = {}
    for name in ("yoloxn", "yoloxs_rslu"):
        model = varied_model(f"models/{name}.yaml")
        path = save_checkpoint(root / f"{name}.pt", {"model": model.state_dict(), "yaml": model.yaml,
                                                     "names": ["a", "b", "c"]})
        out[name] = (path, model)
    return out
