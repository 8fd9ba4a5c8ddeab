"""Data: what a dataset is and how its samples reach the model.

    dataset_yaml  dataset descriptions (data/*.yaml): paths, names, splits, the demo generator
    datasets      LoadImagesAndLabels and create_dataloader: batches of (images, targets, paths, shapes)
    augment       letterbox, mosaic, mixup, random perspective, HSV, flips: pure functions of a seeded rng
    label_cache   verify every image and label once, in parallel; cache the result beside the labels
    verify        the checks of one image and its label file, every problem named
    coco          COCO json annotations as training labels; COCO's category ids
    demo          the built-in procedural demo dataset
    image_io      reading images as OpenCV does, JPEGs through simplejpeg
"""
