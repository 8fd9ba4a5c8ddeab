"""utils/data/label_cache.py: the verified labels are cached beside the labels and rebuilt whenever a file,
the class count or the cache itself changes; a cache is never trusted blindly."""
import logging
import os
import time

import numpy as np

from tests.utils.data.conftest import NC, write_image, write_labels
from utils.data import label_cache
from utils.data.datasets import LoadImagesAndLabels, img2label_paths


def build(path, **kw):
    return LoadImagesAndLabels(str(path / "images" / "train"), img_size=64, batch_size=4, nc=NC, workers=0, **kw)


def labels_of(ds, name):
    return ds.labels[[os.path.basename(f) for f in ds.im_files].index(name)]


def test_cache_is_reused_and_rebuilt_when_a_file_changes(broken_dataset, caplog):
    build(broken_dataset)
    cache = broken_dataset / "labels" / "train.cache"
    assert cache.is_file()
    with caplog.at_level(logging.INFO, logger="yolox5.data"):
        ds = build(broken_dataset)
    assert "(cache " in caplog.text  # loaded from the cache, warnings repeated
    assert "class.txt: line 1: class 7" in caplog.text
    assert len(labels_of(ds, "good0.jpg")) == 2
    label = broken_dataset / "labels" / "train" / "good0.txt"
    label.write_text("0 0.5 0.5 0.2 0.2\n")
    os.utime(label, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolox5.data"):
        ds = build(broken_dataset)
    assert "cache out of date" in caplog.text and len(labels_of(ds, "good0.jpg")) == 1
    cache.write_bytes(b"corrupt cache")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolox5.data"):
        ds = build(broken_dataset)
    assert "unreadable cache" in caplog.text and len(ds) == 14


def small_set(root, n=3):
    images = [root / "images" / f"{i}.jpg" for i in range(n)]
    for i, f in enumerate(images):
        write_image(f, seed=i)
        write_labels(root / "labels" / f"{i}.txt", f"{i % NC} 0.5 0.5 0.2 0.2\n")
    files = [str(f) for f in images]
    return files, img2label_paths(files), root / "labels.cache"


def verify(files, labels, cache, nc=NC):
    return label_cache.verify_dataset(files, labels, None, nc, cache, workers=0)


def touch_later(path):
    later = time.time_ns() + 10 ** 9
    os.utime(path, ns=(later, later))


def test_cache_hit_and_every_invalidation(tmp_path):
    files, labels, cache = small_set(tmp_path)
    first = verify(files, labels, cache)
    assert not first.from_cache and cache.is_file()
    again = verify(files, labels, cache)
    assert again.from_cache and again.files == first.files
    assert all(np.array_equal(a, b) for a, b in zip(again.labels, first.labels))
    # a label file edited (same size: the modification time tells)
    write_labels(tmp_path / "labels" / "0.txt", "2 0.5 0.5 0.2 0.2\n")
    touch_later(tmp_path / "labels" / "0.txt")
    edited = verify(files, labels, cache)
    assert not edited.from_cache and edited.labels[0][0, 0] == 2
    # an image replaced
    write_image(tmp_path / "images" / "1.jpg", seed=9, h=32, w=48)
    touch_later(tmp_path / "images" / "1.jpg")
    replaced = verify(files, labels, cache)
    assert not replaced.from_cache and replaced.shapes[1].tolist() == [32, 48]
    # another class count: the range checks differ
    assert verify(files, labels, cache).from_cache
    fewer = verify(files, labels, cache, nc=2)
    assert not fewer.from_cache and len(fewer.labels[0]) == 0 and "class 2" in " ".join(fewer.messages)
    # a label file deleted: that image becomes background
    verify(files, labels, cache)
    os.remove(tmp_path / "labels" / "2.txt")
    removed = verify(files, labels, cache)
    assert not removed.from_cache and removed.counts["missing"] == 1
    # one more image in the list
    more_files, more_labels, _ = small_set(tmp_path, n=4)
    assert not verify(more_files, more_labels, cache).from_cache


def test_cache_of_another_version_or_a_broken_file_is_not_trusted(tmp_path, caplog, monkeypatch):
    files, labels, cache = small_set(tmp_path)
    verify(files, labels, cache)
    monkeypatch.setattr(label_cache, "CACHE_VERSION", "yolox5-labels-v999")
    with caplog.at_level(logging.INFO, logger="yolox5.data"):
        assert not verify(files, labels, cache).from_cache
    assert "cache out of date" in caplog.text
    cache.write_bytes(cache.read_bytes()[:100])  # torn write
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolox5.data"):
        result = verify(files, labels, cache)
    assert not result.from_cache and len(result.files) == 3 and "unreadable cache" in caplog.text


def test_unwritable_cache_location_still_verifies(tmp_path, caplog):
    files, labels, _ = small_set(tmp_path)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache folder would be")
    with caplog.at_level(logging.WARNING, logger="yolox5.data"):
        result = verify(files, labels, blocker / "labels.cache")
    assert len(result.files) == 3 and "cache not written" in caplog.text


def test_cached_labels_are_read_once_and_split_per_image(tmp_path, monkeypatch):
    # Each NpzFile[key] decompresses the whole array again; read per image, a COCO-sized cache took hours.
    labels = [np.full((k % 4, 5), k, np.float32) for k in range(50)]
    result = label_cache.VerifiedSet([f"{k}.jpg" for k in range(50)], np.ones((50, 2), np.int64), labels,
                                     dict(zip(label_cache.STATUSES, [50, 0, 0, 0])), [])
    path = tmp_path / "train.cache"
    label_cache._save(path, result, "sig")
    reads = []
    real_load = np.load

    class Counting:
        def __init__(self, z):
            self.z = z

        def __getitem__(self, key):
            reads.append(key)
            return self.z[key]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.z.close()

    monkeypatch.setattr(label_cache.np, "load", lambda *a, **k: Counting(real_load(*a, **k)))
    loaded = label_cache._load(path, "sig")
    assert reads.count("labels") == 1
    assert all(np.array_equal(a, b) for a, b in zip(loaded.labels, labels)) and len(loaded.labels) == 50
