"""benchmarks/bench_loaders.py: its loader names, one measurement of ours, and its tables (the
comparison itself needs the three environments and is not run here)."""
import functools

import pytest

from benchmarks import bench_loaders as B


def test_loader_names_pick_builder_and_environment():
    assert B.builder("ours") is B.build_ours and B.env_of("ours") == "ours"
    pb4 = B.builder("ours-pb4")
    assert isinstance(pb4, functools.partial) and pb4.keywords == {"partner_batches": 4}
    assert B.env_of("ours-pb4") == "ours" and B.env_of("ultralytics") == "ultralytics"
    assert B.builder("yolov5") is B.build_yolov5
    with pytest.raises(SystemExit, match="unknown loader 'darknet'"):
        B.builder("darknet")


def test_one_measurement_of_ours(tiny_data):
    images = str(tiny_data.parent / "ds" / "images" / "train")
    r = B.measure("ours-pb1", images, batch=4, workers=0, mixup=1.0)
    assert r["images"] == 16 and r["img_s"] > 0 and r["verify_s"] > 0 and r["cached_s"] > 0
    assert r["loader"] == "ours-pb1" and "torch" in r and "yolov5" not in r


def test_tables_give_medians_and_ratios():
    def result(loader, mixup, img_s):
        return {"loader": loader, "mixup": mixup, "workers": 2, "img_s": img_s, "verify_s": 1.0, "cached_s": 0.1}

    results = [result(name, mixup, speed * (1 + mixup)) for name, speed in
               (("ours", 300), ("ours", 200), ("ours", 250), ("yolov5", 100), ("ultralytics", 200))
               for mixup in (0.0, 1.0)]
    table = B.speed_table(results, ["ours", "yolov5", "ultralytics"], workers=2)
    assert "| mosaic | ours | 250 | 300, 200, 250 | 2.50x | 1.25x |" in table
    assert "| mosaic+mixup | yolov5 | 200 | 200 | 1.00x | 0.50x |" in table
    assert "| ours | 1.00 | 0.100 |" in B.verify_table(results, ["ours"])
