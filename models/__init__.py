"""Models: YAML layer lists built into networks, and their weights.

    yolo            Model: a [from, number, module, args] layer list as an nn.Module; its table, parameters, GFLOPs
    parser          parse_model: rows to modules, errors that name the file and the layer
    registry        the explicit table of blocks a YAML row may name
    common          YOLOX / YOLOv5 blocks (Conv, DWConv, Focus, Bottleneck, C3, SPP, SPPF, Concat)
    activations     per-layer activations and the relu_silu policy
    heads/          detection heads on one contract (base), YOLOX's DetectX and YOLOXHead (yolox)
    weights         load_model and load_pretrained: project and official checkpoints onto YAML models
    yolox_official  official YOLOX state_dict keys <-> the YAML layers
    fuse            BatchNorm folded into convolutions
    *.yaml          the model files
"""
