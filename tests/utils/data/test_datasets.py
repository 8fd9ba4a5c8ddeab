"""utils/data/datasets.py: verification of bad files, COCO vs YOLO sources, loaders, letterboxes."""
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from utils.data.datasets import LoadImagesAndLabels, create_dataloader
from utils.data.demo import generate_demo_dataset

from tests.utils.data.conftest import NC, write_image, write_labels


def build(path, **kw):
    return LoadImagesAndLabels(str(path / "images" / "train"), img_size=64, batch_size=4, nc=NC, workers=0, **kw)


def labels_of(ds, name):
    return ds.labels[[os.path.basename(f) for f in ds.im_files].index(name)]


def test_every_problem_is_named_and_the_rest_is_kept(broken_dataset, caplog):
    with caplog.at_level(logging.INFO, logger="yolox5.data"):
        ds = build(broken_dataset)
    log = caplog.text
    names = [os.path.basename(f) for f in ds.im_files]
    assert "garbage.jpg" not in names and "tiny.png" not in names  # unusable images dropped
    assert "garbage.jpg: unreadable image" in log and "tiny.png: image smaller than 10 px" in log
    assert "truncated.jpg" in names and "truncated.jpg: JPEG with a damaged" in log
    assert "columns.txt: line 1: 4 columns, expected 5" in log
    assert "words.txt: line 1: not numbers" in log
    assert "class.txt: line 1: class 7 outside [0, 3)" in log
    assert "size.txt: line 1: zero, negative or non-finite size" in log and "line 2: zero, negative" in log
    assert "slightly_out.txt: 1 box(es) slightly outside the image clipped" in log
    assert "absurd.txt: line 1: box far outside the image, dropped" in log
    assert "dupes.txt: 1 duplicate row(s) removed" in log
    assert len(labels_of(ds, "columns.jpg")) == 1 and len(labels_of(ds, "class.jpg")) == 1
    assert len(labels_of(ds, "size.jpg")) == 1 and len(labels_of(ds, "dupes.jpg")) == 2
    x1 = labels_of(ds, "slightly_out.jpg")[0, 1] - labels_of(ds, "slightly_out.jpg")[0, 3] / 2
    x2 = labels_of(ds, "slightly_out.jpg")[0, 1] + labels_of(ds, "slightly_out.jpg")[0, 3] / 2
    assert x1 == pytest.approx(0.93, abs=1e-5) and x2 == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(labels_of(ds, "polygon.jpg")[0], [2, 0.2, 0.25, 0.2, 0.3], atol=1e-6)
    assert len(labels_of(ds, "background.jpg")) == 0
    assert ds.counts == {"found": 12, "missing": 1, "empty": 1, "corrupt": 2}
    assert "16 images: 12 with labels, 1 background (no label file), 1 empty, 2 corrupt and skipped" in log
    # and training goes on: every kept sample loads, the damaged JPEG included
    loader, _ = create_dataloader(str(broken_dataset / "images" / "train"), 64, 4, 32, nc=NC, workers=0)
    seen = sum(len(paths) for _, _, paths, _ in loader)
    assert seen == len(ds) == 14


def test_all_bad_fails_with_a_clear_message(tmp_path):
    images = tmp_path / "images" / "train"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"bad{i}.jpg").write_bytes(b"nope")
    with pytest.raises(ValueError, match="every one of 3 images is unusable"):
        build(tmp_path)
    with pytest.raises(FileNotFoundError, match="image source not found"):
        build(tmp_path / "nowhere")


def test_image_kinds_load_as_bgr(tmp_path):
    from PIL import Image

    images = tmp_path / "images" / "train"
    images.mkdir(parents=True)
    base = np.zeros((40, 60, 3), np.uint8)
    base[:, :30] = (255, 0, 0)  # RGB red on the left half
    Image.fromarray(base).convert("L").save(images / "gray.png")
    Image.fromarray(base).convert("RGBA").save(images / "rgba.png")
    Image.fromarray(base).convert("P").save(images / "palette.png")
    cv2.imwrite(str(images / "deep.png"), (base[..., ::-1].astype(np.uint16) * 257))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    Image.fromarray(base).save(images / "rotated.jpg", exif=exif, quality=95)
    ds = LoadImagesAndLabels(str(images), img_size=60, batch_size=1, nc=NC, workers=0)
    by_name = {os.path.basename(f): i for i, f in enumerate(ds.im_files)}
    assert tuple(ds.shapes[by_name["rotated.jpg"]]) == (60, 40)
    for name, i in by_name.items():
        img, (h0, w0), _ = ds.load_image(i)
        assert img.dtype == np.uint8 and img.shape[2] == 3, name
        assert (h0, w0) == ((60, 40) if name == "rotated.jpg" else (40, 60)), name
    deep = ds.load_image(by_name["deep.png"])[0]
    assert deep[20, 5].tolist() == [0, 0, 255]  # BGR red
    rgba = ds.load_image(by_name["rgba.png"])[0]
    assert rgba[20, 5].tolist() == [0, 0, 255]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, seed=1, n_train=24, n_val=8, img_size=(96, 128))
    return root


def test_coco_json_and_yolo_txt_give_the_same_targets(demo):
    from utils.data.demo import DEMO_NAMES

    nc = len(DEMO_NAMES)
    yolo = LoadImagesAndLabels(str(demo / "images" / "val"), img_size=128, nc=nc, workers=0)
    coco = LoadImagesAndLabels(None, img_size=128, nc=nc, workers=0, json=str(demo / "annotations" / "instances_val.json"),
                               images_dir=str(demo / "images" / "val"))
    assert sorted(yolo.im_files) == sorted(coco.im_files)
    for f, lab in zip(coco.im_files, coco.labels):
        other = yolo.labels[yolo.im_files.index(f)]
        a, b = lab[np.lexsort(lab.T[::-1])], other[np.lexsort(other.T[::-1])]
        np.testing.assert_allclose(a, b, atol=2e-6 * 128)
    # and the batches carry the same targets
    (_, t1, p1, _), = [next(iter(create_dataloader(str(demo / "images" / "val"), 128, 8, 32, nc=nc, workers=0)[0]))]
    loader, _ = create_dataloader(None, 128, 8, 32, nc=nc, workers=0, json=str(demo / "annotations" / "instances_val.json"),
                                  images_dir=str(demo / "images" / "val"))
    _, t2, p2, _ = next(iter(loader))
    assert [os.path.basename(p) for p in p1] == [os.path.basename(p) for p in p2]
    key = lambda t: t[np.lexsort(t.numpy().T[::-1])]  # noqa: E731
    torch.testing.assert_close(key(t1), key(t2), atol=1e-5, rtol=0)


def test_batches_are_bgr_uint8_with_targets_and_reproducible(demo):
    from utils.data.demo import DEMO_NAMES

    hyp = {"mosaic": 1.0, "mixup": 0.5, "degrees": 5.0, "shear": 1.0}
    kw = dict(hyp=hyp, augment=True, shuffle=True, seed=3, nc=len(DEMO_NAMES))
    batches = []
    for workers in (0, 2):
        loader, ds = create_dataloader(str(demo / "images" / "train"), 128, 8, 32, workers=workers, **kw)
        batches.append(next(iter(loader)))
    (im0, t0, p0, _), (im1, t1, p1, _) = batches
    assert im0.dtype == torch.uint8 and im0.shape == (8, 3, 128, 128)
    assert p0 == p1 and torch.equal(im0, im1) and torch.equal(t0, t1)  # same seed, any worker count
    assert t0.shape[1] == 6 and set(t0[:, 0].long().tolist()) <= set(range(8))
    assert ((t0[:, 2:] >= 0) & (t0[:, 2:] <= 1)).all() and (t0[:, 1] < len(DEMO_NAMES)).all()


def test_close_mosaic_reaches_persistent_workers(tmp_path):
    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    for i in range(16):
        write_image(images / f"{i}.jpg", h=64, w=64, seed=i)
        write_labels(labels / f"{i}.txt", "0 0.5 0.5 0.4 0.4\n")  # exactly one box per image
    loader, ds = create_dataloader(str(images), 64, 4, 32, hyp={"mosaic": 1.0, "scale": 0.0, "translate": 0.0},
                                   augment=True, workers=2, nc=NC, shuffle=True)
    first = torch.cat([t for _, t, _, _ in loader])
    assert len(first) > 16  # mosaics hold several images' boxes
    ds.close_mosaic()
    second = torch.cat([t for _, t, _, _ in loader])
    assert len(second) == 16  # one box per sample: mosaic is off in the running workers too


def test_topleft_letterbox_for_official_weights(demo):
    from utils.data.demo import DEMO_NAMES

    ds = LoadImagesAndLabels(str(demo / "images" / "val"), img_size=160, nc=len(DEMO_NAMES), workers=0, letterbox_mode="topleft")
    img, labels, _, shapes = ds[0]
    (h0, w0), ((rh, rw), pad) = shapes
    assert pad == (0, 0) and img.shape == (3, 160, 160)
    r = min(160 / h0, 160 / w0)
    assert rh == pytest.approx(int(h0 * r) / h0) and rw == pytest.approx(int(w0 * r) / w0)
    assert (img[:, int(h0 * r):, :] == 114).all()  # padding below the pasted image


def test_nc_is_optional(broken_dataset, caplog):
    """Without nc the class ids are not range-checked (as YOLOv5's loader): the class-7 row is kept and the
    summary names the largest id; with nc it is dropped and named."""
    with caplog.at_level(logging.INFO, logger="yolox5.data"):
        loader, ds = create_dataloader(str(broken_dataset / "images" / "train"), 64, 4, 32, workers=0)
    assert labels_of(ds, "class.jpg")[:, 0].tolist() == [7, 1]
    assert "class ids not checked (no nc), largest 7" in caplog.text
    images, targets, _, _ = next(iter(loader))
    assert images.shape[0] == 4 and targets.shape[1] == 6
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolox5.data"):
        ds = build(broken_dataset)
    assert labels_of(ds, "class.jpg")[:, 0].tolist() == [1] and "class 7 outside [0, 3)" in caplog.text
    assert "largest" not in caplog.text
