"""Evaluation: a model over a dataset split to COCO AP, P and R, and the per-class table.

    evaluator  the engine of val.py and the trainer (EvalOptions, ValOptions, evaluate, run_val)
    coco_eval  COCO ground truth and detections, COCOeval (pycocotools or faster-coco-eval), the per-class table
    metrics    YOLOv5's prediction-label matching, P/R and AP per class, fitness
"""
