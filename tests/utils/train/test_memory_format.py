"""utils/train/memory_format.py: channels_last on CPU unless the model holds a conv torch 2.13 crashes on."""
import torch
from torch import nn

from models.yolo import Model
from utils.train.memory_format import crashes_onednn_in_channels_last, training_memory_format

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_pai_models_train_contiguous_on_cpu_and_yolox_channels_last():
    fmt, why = training_memory_format(Model("models/pai_yoloxs.yaml", nc=8), CPU)
    assert fmt == torch.contiguous_format and "model.0.rbr_1x1.conv" in why
    assert training_memory_format(Model("models/yoloxn.yaml", nc=8), CPU) == (torch.channels_last, "")
    assert training_memory_format(Model("models/pai_yoloxs.yaml", nc=8), CUDA) == (torch.contiguous_format, "")


def test_the_crashing_convs_are_strided_1x1_on_2_to_15_channels():
    assert crashes_onednn_in_channels_last(nn.Conv2d(3, 32, 1, 2))
    assert crashes_onednn_in_channels_last(nn.Conv2d(15, 32, 1, (2, 2)))
    assert not crashes_onednn_in_channels_last(nn.Conv2d(16, 32, 1, 2))
    assert not crashes_onednn_in_channels_last(nn.Conv2d(3, 32, 3, 2))
    assert not crashes_onednn_in_channels_last(nn.Conv2d(3, 32, 1, 1))
    assert not crashes_onednn_in_channels_last(nn.Conv2d(1, 32, 1, 2))
