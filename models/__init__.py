"""Models: YAML layer lists built into networks, and their weights.

    yolo            Model: a [from, number, module, args] layer list as an nn.Module; its table, parameters, GFLOPs
    parser          parse_model: rows to modules, errors that name the file and the layer
    registry        the explicit table of blocks a YAML row may name
    common          YOLOX / YOLOv5 blocks (Conv, DWConv, Focus, Bottleneck, C3, SPP, SPPF, Concat)
    repvgg          RepVGGBlock (YOLOX-PAI), RepConv (DAMO-YOLO), MT_SPPF; their re-parameterisation
    asff, gsconv    YOLOX-PAI's ASFF after the PAFPN, its GSConv slim neck
    tinynas         DAMO-YOLO's TinyNAS residual block
    repgfpn         DAMO-YOLO's RepGFPN fusion node (CSPStage)
    input_norm      what the weights expect of the BGR 0-255 image (channel order, mean, std)
    activations     per-layer activations and the relu_silu policy
    heads/          detection heads on one contract (base): YOLOX's DetectX and YOLOXHead (yolox), YOLOX-PAI's
                    TOODHead (tood), DAMO-YOLO's ZeroHead with its GFL decoder (zero)
    weights         load_model and load_pretrained: project, official, EasyCV and DAMO checkpoints onto YAML models
    yolox_official  official YOLOX state_dict keys <-> the YAML layers
    easycv, damo    EasyCV's and DAMO-YOLO's state_dict keys -> the YAML layers, and the input they expect
    fuse            BatchNorm folded into convolutions
    *.yaml          the model files
"""
