"""Export: models to files NPU toolchains take, each verified against torch.

    options      ExportOptions: what to export, checked once
    exporter     the engine of export.py: prepare, write, verify, convert, quantise, report
    layouts      ExportModel: a model whose forward writes a layout (the layouts and their decoding: utils/infer/outputs)
    rewrite      export-time rewrites: BatchNorm folded, Focus as convolutions
    onnx_file    torch -> ONNX, onnx-simplifier, metadata, opset errors that name the op
    verify       onnx.checker and onnxruntime against torch, per output
    compare      converted models against float32 torch: cosine, decoded boxes and scores, detection agreement
    int8         calibration images, static QDQ quantisation, its measured cost
    openvino     OpenVINO IR and NNCF int8 (running IRs: utils/infer/openvino_runtime)
    rknn         RKNN models through rknn-toolkit2 and its simulator
    torchscript  TorchScript with metadata
    nms_graph    NonMaxSuppression inside the ONNX graph
    npu_report   what an 8-bit NPU converter will see in a file
"""
