"""The training targets of a batch, as every loss reads them."""
from __future__ import annotations

import torch


def targets_in_pixels(targets: torch.Tensor, preds: list[torch.Tensor], first_stride: float, nc: int):
    """[M, 6] normalised rows (image, class, cx, cy, w, h) -> (image index [T], class [T], cxcywh pixels
    [T, 4]) on the predictions' device, sorted by image; the input size is the first level's size times its
    stride. Image indices outside the batch or classes outside [0, nc) are an error."""
    B, device = preds[0].shape[0], preds[0].device
    in_h, in_w = preds[0].shape[2] * first_stride, preds[0].shape[3] * first_stride
    targets = targets.to(device=device, dtype=torch.float32).reshape(-1, 6)
    if targets.shape[0]:
        bad = (targets[:, 0] < 0) | (targets[:, 0] >= B) | (targets[:, 1] < 0) | (targets[:, 1] >= nc)
        if bool(bad.any()):
            raise ValueError(f"targets hold image indices outside [0, {B}) or classes outside [0, {nc})")
    targets = targets[torch.argsort(targets[:, 0], stable=True)]
    scale = torch.tensor([in_w, in_h, in_w, in_h], device=device, dtype=torch.float32)
    return targets[:, 0].long(), targets[:, 1].long(), targets[:, 2:6] * scale
