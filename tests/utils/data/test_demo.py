"""The procedural demo dataset (utils/data/demo.py): determinism, file layout, label validity, COCO json
consistency, boxes tight on the drawn pixels, and the regenerate-when-incomplete logic."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.support import ROOT as REPO
from utils.data import demo as demo_data
from utils.data.demo import DEMO_NAMES, ensure_demo_dataset, generate_demo_dataset, render_scene, shape_mask

SMALL = dict(n_train=12, n_val=6, img_size=(160, 192), progress=False)  # (h, w): not square, to catch swaps
H, W = SMALL["img_size"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, **SMALL)


def _read_rows(path: Path) -> np.ndarray:
    text = path.read_text()
    return np.array([[float(v) for v in line.split()] for line in text.splitlines()]).reshape(-1, 5)


def _files(root: Path) -> dict:
    """Relative path -> bytes of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes(demo, tmp_path):
    again = _files(generate_demo_dataset(tmp_path, seed=0, **SMALL))
    first = _files(demo)
    assert again.keys() == first.keys()
    assert [k for k in first if first[k] != again[k]] == []  # labels, json and jpgs alike


def test_different_seed_differs(demo, tmp_path):
    other = generate_demo_dataset(tmp_path, seed=1, **SMALL)
    for name in ("labels/train", "labels/val"):
        a = [p.read_bytes() for p in sorted((demo / name).glob("*.txt"))]
        b = [p.read_bytes() for p in sorted((other / name).glob("*.txt"))]
        assert a != b
    assert (demo / demo_data.VAL_JSON).read_bytes() != (other / demo_data.VAL_JSON).read_bytes()


def test_images_do_not_depend_on_drawing_order():
    late = render_scene(3, "val", 4, (H, W))  # drawn first here, after others elsewhere
    for i in range(4):
        render_scene(3, "val", i, (H, W))
    again = render_scene(3, "val", 4, (H, W))
    assert np.array_equal(late[0], again[0]) and late[1] == again[1]
    assert not np.array_equal(render_scene(3, "train", 4, (H, W))[0], late[0])  # splits differ


# ----------------------------------------------------------------------------- layout and labels


def test_file_counts_and_names(demo):
    for split, n in (("train", SMALL["n_train"]), ("val", SMALL["n_val"])):
        images = sorted(p.stem for p in (demo / "images" / split).iterdir())
        labels = sorted(p.stem for p in (demo / "labels" / split).iterdir())
        assert images == labels == [f"{i:06d}" for i in range(1, n + 1)]
    marker = json.loads((demo / demo_data.MARKER).read_text())
    assert marker == {"format_version": demo_data.FORMAT_VERSION, "seed": 0, "n_train": 12, "n_val": 6,
                      "img_size": [H, W], "jpeg_quality": 90}


def test_labels_valid(demo):
    n_boxes = 0
    for path in sorted((demo / "labels").rglob("*.txt")):
        rows = _read_rows(path)
        n_boxes += len(rows)
        assert np.all(rows[:, 0] == rows[:, 0].round()), path
        assert np.all((rows[:, 0] >= 0) & (rows[:, 0] < len(DEMO_NAMES))), path
        assert np.all((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)), path
        assert np.all(rows[:, 3:] > 0), path
        # the box itself lies inside the image, not only its centre
        corners = np.concatenate([rows[:, 1:3] - rows[:, 3:] / 2, rows[:, 1:3] + rows[:, 3:] / 2], 1)
        assert np.all((corners >= -1e-6) & (corners <= 1 + 1e-6)), path
        for line in path.read_text().splitlines():
            assert all(len(v.split(".")[1]) == 6 for v in line.split()[1:]), line  # 6 decimals
        img = cv2.imread(str(demo / "images" / path.parent.name / f"{path.stem}.jpg"))
        assert img.shape == (H, W, 3)
    assert n_boxes > 3 * (SMALL["n_train"] + SMALL["n_val"])  # a busy dataset, not a sparse one


def test_coco_json_matches_yolo_labels(demo):
    coco = json.loads((demo / demo_data.VAL_JSON).read_text())
    assert coco["categories"] == [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(DEMO_NAMES)]
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    assert len(coco["images"]) == SMALL["n_val"]
    for image in coco["images"]:
        stem = Path(image["file_name"]).stem
        assert image["file_name"] == f"{stem}.jpg" and image["id"] == int(stem)  # the id YOLOv5's val derives
        assert (image["width"], image["height"]) == (W, H)
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert all(a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3] for a in anns)
        from_json = np.array([[a["category_id"] - 1, *a["bbox"]] for a in anns], float).reshape(-1, 5)
        rows = _read_rows(demo / "labels" / "val" / f"{stem}.txt")
        # YOLO (cx, cy, w, h) normalised -> COCO (x, y, w, h) pixels
        from_txt = np.stack([rows[:, 0], (rows[:, 1] - rows[:, 3] / 2) * W, (rows[:, 2] - rows[:, 4] / 2) * H,
                             rows[:, 3] * W, rows[:, 4] * H], 1)
        assert from_json.shape == from_txt.shape
        assert np.array_equal(from_json[:, 0], from_txt[:, 0])
        np.testing.assert_allclose(from_json[:, 1:], from_txt[:, 1:], atol=1.0)


def test_demo_yaml_describes_the_generator():
    data = yaml.safe_load((REPO / "data" / "demo.yaml").read_text())
    assert data["names"] == DEMO_NAMES and data["nc"] == len(DEMO_NAMES)
    assert data["generate"] == "demo" and data["val_json"] == demo_data.VAL_JSON
    assert (data["train"], data["val"]) == ("images/train", "images/val")


# ----------------------------------------------------------------------------- boxes on pixels


def _mask_box(mask: np.ndarray) -> tuple:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("cls", range(len(DEMO_NAMES)))
def test_shapes_on_flat_background_boxes_match_pixels(cls):
    """One shape on a flat canvas, through JPEG: the box from its mask is where the pixels changed."""
    rng = np.random.default_rng(cls)
    for size in (8.0, 13.5, 40.0, 120.0):
        canvas = np.full((160, 160, 3), 128, np.uint8)
        mask = shape_mask(cls, size, canvas.shape[:2], (80.3, 79.6), angle=float(rng.uniform(0, 360)))
        assert mask.any(), (DEMO_NAMES[cls], size)
        canvas[mask] = (20, 230, 60)
        ok, jpg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        changed = np.abs(cv2.imdecode(jpg, cv2.IMREAD_COLOR).astype(int) - 128).max(2) > 50
        np.testing.assert_allclose(_mask_box(changed), _mask_box(mask), atol=1, err_msg=f"{DEMO_NAMES[cls]} {size}")
        x1, y1, x2, y2 = _mask_box(mask)
        # `size` is the diameter of the shape's circumscribed circle
        assert 0.65 * size - 2 <= max(x2 - x1, y2 - y1) <= size + 2, (DEMO_NAMES[cls], size)


def test_shape_geometry():
    hw, c = (101, 101), (50.0, 50.0)
    assert shape_mask(0, 60, hw, c)[50, 50] and not shape_mask(4, 60, hw, c)[50, 50]  # circle solid, ring holed
    x1, y1, x2, y2 = _mask_box(shape_mask(6, 60, hw, c, angle=0, ratio=0.5))  # ellipse: major axis along x
    assert (x2 - x1, y2 - y1) in ((61, 31), (60, 30), (61, 30), (60, 31))
    x1, y1, x2, y2 = _mask_box(shape_mask(7, 60, hw, c, angle=0, ratio=0.5))  # diamond: tall and narrow
    assert y2 - y1 > 1.8 * (x2 - x1)
    with pytest.raises(ValueError, match="cls=8 is not a demo class; allowed 0..7"):
        shape_mask(8, 10, hw, c)


def test_rendered_boxes_tight_around_visible_pixels():
    """In rendered scenes each label's colour reaches every edge of its box and never the ring just outside
    (clutter, background and other objects never take an object's exact colour here)."""
    n_checked = 0
    for i in range(8):
        img, objects = render_scene(0, "train", i, (H, W))
        padded = np.pad(img, ((1, 1), (1, 1), (0, 0)), constant_values=0)
        for o in objects:
            same = np.all(padded == np.array(o.colour, np.uint8), axis=2)
            x1, y1, x2, y2 = (v + 1 for v in o.box)  # in padded coordinates
            inside = same[y1:y2, x1:x2]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), o
            ring = same[y1 - 1:y2 + 1, x1 - 1:x2 + 1].copy()
            ring[1:-1, 1:-1] = False
            assert not ring.any(), o
            assert o.visible >= demo_data.MIN_VISIBLE and o.inside >= demo_data.MIN_INSIDE
            n_checked += 1
    assert n_checked > 20


def test_saved_files_are_the_rendered_scenes(demo):
    """The jpgs on disk are the rendered images (up to JPEG loss) and the label files their boxes, so the
    pixel checks above hold for the saved dataset too."""
    for split, n in (("train", 3), ("val", 3)):
        for i in range(n):
            img, objects = render_scene(0, split, i, (H, W))
            stem = f"{i + 1:06d}"
            saved = cv2.imread(str(demo / "images" / split / f"{stem}.jpg")).astype(float)
            other = render_scene(0, split, i + 1, (H, W))[0]
            assert np.abs(saved - img).mean() < min(12, np.abs(saved - other).mean() / 3)  # JPEG loss on grain
            assert (demo / "labels" / split / f"{stem}.txt").read_text() == demo_data.yolo_rows(objects, H, W)


def test_scene_variety():
    """Across 60 scenes: background-only images, occluded and border-cut objects, tiny and large ones."""
    counts, visible, inside, sides = [], [], [], []
    for i in range(60):
        _, objects = render_scene(0, "train", i, (320, 320))
        counts.append(len(objects))
        for o in objects:
            visible.append(o.visible)
            inside.append(o.inside)
            sides.append(max(o.box[2] - o.box[0], o.box[3] - o.box[1]))
    assert 0 in counts and max(counts) <= demo_data.MAX_OBJECTS
    assert min(visible) < 0.9 and min(inside) < 0.9
    assert min(sides) <= 10 and max(sides) >= 120


def test_bad_arguments():
    with pytest.raises(ValueError, match="split='test'"):
        render_scene(0, "test", 0)
    with pytest.raises(ValueError, match="img_size=16: each side must be at least 32 px"):
        render_scene(0, "train", 0, 16)


# ----------------------------------------------------------------------------- ensure_demo_dataset


def test_ensure_skips_a_complete_dataset(tmp_path, monkeypatch):
    ensure_demo_dataset(tmp_path, **SMALL)
    before = _files(tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(demo_data, "generate_demo_dataset", fail)
    assert ensure_demo_dataset(tmp_path, **SMALL) == tmp_path
    assert _files(tmp_path) == before


def test_ensure_regenerates_after_an_interrupted_run(tmp_path, monkeypatch):
    ensure_demo_dataset(tmp_path, **SMALL)
    complete = _files(tmp_path)
    real, calls = demo_data.render_scene, []

    def interrupted(*args):
        calls.append(args)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(*args)

    (tmp_path / demo_data.MARKER).unlink()  # a stale dataset: must be redrawn
    monkeypatch.setattr(demo_data, "render_scene", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_dataset(tmp_path, **SMALL)
    monkeypatch.setattr(demo_data, "render_scene", real)
    assert not (tmp_path / demo_data.MARKER).exists()  # the half-written dataset is not certified
    assert len(list((tmp_path / "images" / "train").iterdir())) == 5
    ensure_demo_dataset(tmp_path, **SMALL)
    assert _files(tmp_path) == complete


def test_ensure_replaces_a_dataset_with_other_parameters(tmp_path):
    ensure_demo_dataset(tmp_path, **SMALL)
    (tmp_path / "labels" / "train.cache").write_text("stale cache")
    (tmp_path / "images" / "train" / "keep_me.png").write_bytes(b"not ours")
    ensure_demo_dataset(tmp_path, **{**SMALL, "n_train": 4})
    assert sorted(p.name for p in (tmp_path / "images" / "train").iterdir()) == [
        "000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg", "keep_me.png"]  # stale demo files gone, others kept
    assert len(list((tmp_path / "labels" / "train").iterdir())) == 4
    assert not (tmp_path / "labels" / "train.cache").exists()
    assert json.loads((tmp_path / demo_data.MARKER).read_text())["n_train"] == 4


def test_ensure_ignores_a_torn_marker(tmp_path):
    (tmp_path / demo_data.MARKER).write_text('{"format_version": ')
    ensure_demo_dataset(tmp_path, **SMALL)
    assert json.loads((tmp_path / demo_data.MARKER).read_text())["n_val"] == SMALL["n_val"]
