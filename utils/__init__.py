"""Library code behind train.py, val.py, export.py and detect.py, by concern:

    data/    datasets and loaders, augmentation, label verification and cache, COCO json, demo data, image reading
    loss/    losses (by the head's declared name) and label assignment (SimOTA)
    eval/    the evaluation engine, COCO AP, P/R metrics
    infer/   running a model: weights and exported files, NMS, the Detector API, the detection engine
    export/  the export engine and each format: ONNX, layouts, rewrites, verification, int8, OpenVINO, RKNN, ...
    train/   the trainer, optimiser, schedule, EMA

and single-file concerns shared by several of them: boxes, grid (anchor points), config (the hyperparameter
table), yaml_io (reading description files), checkpoints, devices (device and DDP context), runs (run
folders), plots.
"""
