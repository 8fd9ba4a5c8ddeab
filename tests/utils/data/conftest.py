"""A dataset folder with one of every problem verification must name, and the writers that make it."""
import cv2
import numpy as np
import pytest

NC = 3


def write_image(path, h=64, w=80, seed=0, ext=None):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return img


def write_labels(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def broken_dataset(tmp_path):
    """A YOLO-layout folder with one good sample and one of every problem the issue names."""
    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    good = "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n"
    for i in range(3):
        write_image(images / f"good{i}.jpg", seed=i)
        write_labels(labels / f"good{i}.txt", good)
    (images / "garbage.jpg").write_bytes(b"this is not an image")
    write_labels(labels / "garbage.txt", good)
    write_image(images / "truncated.jpg", seed=5)
    data = (images / "truncated.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[:-200])
    write_labels(labels / "truncated.txt", good)
    write_image(images / "tiny.png", h=8, w=8)
    write_labels(labels / "tiny.txt", good)
    cases = {
        "columns": "0 0.5 0.5 0.2\n1 0.3 0.3 0.1 0.1\n",
        "words": "zero 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n",
        "class": "7 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n",
        "size": "0 0.5 0.5 0.0 0.2\n1 0.3 0.3 -0.1 0.1\n2 0.6 0.6 0.1 0.1\n",
        "slightly_out": "0 0.98 0.5 0.1 0.2\n",
        "absurd": "0 3.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n",
        "dupes": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n",
        "empty": "",
        "polygon": "2 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n",
    }
    for i, (name, text) in enumerate(cases.items()):
        write_image(images / f"{name}.jpg", seed=10 + i)
        write_labels(labels / f"{name}.txt", text)
    write_image(images / "background.jpg", seed=30)  # no label file
    return tmp_path


