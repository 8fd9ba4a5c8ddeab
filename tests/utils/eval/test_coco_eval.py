"""utils/eval/coco_eval.py: ground truth from labels or json (crowd kept), COCOeval, the per-class table."""
import json

import numpy as np
import pytest

from utils.data.coco import COCO80_TO_91
from utils.data.dataset_yaml import load_data_config
from utils.eval import coco_eval


def test_coco_names_and_ids():
    names = load_data_config("data/coco.yaml")["names"]
    assert tuple(names) == coco_eval.COCO_NAMES
    assert coco_eval.category_ids_for(names) == COCO80_TO_91
    assert coco_eval.category_ids_for(["a", "b"]) == [1, 2]
    assert coco_eval.image_ids_for(["a/000000000139.jpg", "b/000000000285.jpg"]) == [139, 285]
    assert coco_eval.image_ids_for(["a/x.jpg", "b/y.jpg"]) == [1, 2]


def _gt_with_crowd():
    return {"images": [{"id": 1, "file_name": "1.jpg", "height": 100, "width": 100}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 1}],
            "categories": [{"id": 1, "name": "a"}]}


def test_crowd_ground_truth_is_kept(tmp_path):
    f = tmp_path / "gt.json"
    f.write_text(json.dumps(_gt_with_crowd()))
    gt = coco_eval.gt_from_json(f)
    det = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
           {"image_id": 1, "category_id": 1, "bbox": [52, 52, 30, 30], "score": 0.95}]  # inside the crowd region
    assert coco_eval.evaluate(gt, det).stats[0] == pytest.approx(1.0)  # the crowd match is ignored, not a FP
    without_crowd = {**gt, "annotations": gt["annotations"][:1]}
    assert coco_eval.evaluate(without_crowd, det).stats[0] < 0.9
    single = coco_eval.gt_from_json(f, single_cls=True)
    assert {a["category_id"] for a in single["annotations"]} == {1} and len(single["categories"]) == 1


def test_evaluate_without_detections_prints_zeros():
    result = coco_eval.evaluate(_gt_with_crowd(), [])
    assert result.stats[0] == 0 and len(result.summary.splitlines()) == 12
    assert result.summary.splitlines()[0] == \
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.000"


def test_gt_from_labels_boxes_in_original_pixels():
    labels = [np.array([[1, 0.5, 0.25, 0.2, 0.1]]), np.zeros((0, 5))]
    gt = coco_eval.gt_from_labels([7, 9], ["a/7.jpg", "b/9.jpg"], labels, np.array([[100, 200], [50, 50]]),
                                  ["x", "y"], [1, 2])
    assert gt["images"][0] == {"id": 7, "file_name": "7.jpg", "height": 100, "width": 200}
    ann = gt["annotations"][0]
    assert ann["bbox"] == pytest.approx([80, 20, 40, 10]) and ann["area"] == pytest.approx(400)
    assert (ann["category_id"], ann["iscrowd"], ann["image_id"]) == (2, 0, 7)


def test_classwise_table_layout():
    table = coco_eval.classwise_table(["person", "bicycle", "car", "traffic light"], [0.535, 0.28, 0.399, np.nan])
    assert table.splitlines() == [
        "+---------------+-------+----------+-------+----------+-------+",
        "| category      | AP    | category | AP    | category | AP    |",
        "+---------------+-------+----------+-------+----------+-------+",
        "| person        | 0.535 | bicycle  | 0.280 | car      | 0.399 |",
        "| traffic light | nan   |          |       |          |       |",  # unused cells blank, not "None"
        "+---------------+-------+----------+-------+----------+-------+"]
    assert coco_eval.classwise_table(["a"], [1.0]).splitlines()[1] == "| category | AP    |"


def test_backends():
    with pytest.raises(ValueError, match="unknown COCO backend 'x'; known: auto, faster, pycocotools"):
        coco_eval.coco_api("x")
    gt = _gt_with_crowd()
    det = [{"image_id": 1, "category_id": 1, "bbox": [12, 10, 20, 20], "score": 0.9},
           {"image_id": 1, "category_id": 1, "bbox": [10, 14, 18, 20], "score": 0.95},
           {"image_id": 1, "category_id": 1, "bbox": [52, 52, 30, 30], "score": 0.5}]
    for dets in (det, []):
        faster, standard = coco_eval.evaluate(gt, dets), coco_eval.evaluate(gt, dets, backend="pycocotools")
        np.testing.assert_allclose(faster.stats, standard.stats, rtol=0, atol=1e-12)  # summation order only
        np.testing.assert_allclose(faster.class_ap, standard.class_ap, rtol=0, atol=1e-12)
        assert faster.summary == standard.summary


def test_auto_backend_is_faster_coco_eval_where_installed(monkeypatch, caplog):
    """faster-coco-eval is a dependency: "auto" (the default of val.py and the trainer) takes it and says so;
    without it, pycocotools."""
    import logging
    import sys

    from utils.eval.evaluator import EvalOptions

    assert EvalOptions().coco_backend == "auto"
    coco_eval.resolve_backend.cache_clear()
    with caplog.at_level(logging.INFO, logger="yolox5.val"):
        assert coco_eval.resolve_backend("auto") == "faster"
    assert "COCO evaluation: faster-coco-eval" in caplog.text
    coco_eval.resolve_backend.cache_clear()
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if it were not installed
    assert coco_eval.resolve_backend("auto") == "pycocotools"
    assert coco_eval.resolve_backend("pycocotools") == "pycocotools"
    coco_eval.resolve_backend.cache_clear()
