"""Inference: running a trained model, whatever form it is in, and reading its detections.

    backends          checkpoints, official YOLOX weights, ONNX files and OpenVINO IRs as callables; the letterbox
                      their weights expect; one forward for the eval output and the raw outputs; boxes back to
                      original-image pixels
    outputs           what exported files output (layouts, names, metadata) and their decoding to the eval output
    openvino_runtime  OpenVINO IRs as functions, and the metadata they carry
    nms               non-maximum suppression of the eval output
    detector          the Detector API: images in, detections in original pixels out
    predict           the engine of detect.py: sources, annotated images and videos, txt and json
"""
