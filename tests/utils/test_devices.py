"""utils/devices.py: DDP context from launcher environments, the autocast dtype per device."""
import os

import pytest
import torch

from models.yolo import Model
from utils.devices import usable_cores


def test_dist_context_from_launcher_environment(monkeypatch):
    from utils.devices import dist_context

    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert not dist_context().distributed
    ctx = dist_context(local_rank_arg=1)  # launch's --local-rank without the environment
    assert ctx.distributed and ctx.local_rank == 1 and ctx.rank == 1 and ctx.world_size == 1
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    ctx = dist_context()
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.is_main) == (3, 0, 4, False)
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: still DDP, as in YOLOv5
    monkeypatch.setenv("RANK", "0")
    assert dist_context().distributed and dist_context().is_main


def test_amp_dtype_per_device():
    from utils.devices import amp_dtype, cpu_has_native_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype(cpu, False) is None and amp_dtype(cuda, False) is None
    assert amp_dtype(cpu, True) == torch.bfloat16 and amp_dtype(cuda, None) == torch.float16
    native = cpu_has_native_bf16()
    assert isinstance(native, bool)
    assert amp_dtype(cpu, None) == (torch.bfloat16 if native else None)  # default on where the CPU has bf16


def test_bf16_autocast_training_step_is_finite_and_close_to_float32():
    """One step under CPU bfloat16 autocast: the loss (computed in float32) stays within a few percent
    of the float32 step's, and every gradient is finite."""
    from utils.loss import ComputeXLoss

    torch.manual_seed(0)
    model = Model("models/yoloxn.yaml", nc=8).train()
    images = torch.rand(2, 3, 128, 128) * 255
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 3, 0.3, 0.6, 0.2, 0.2]])
    loss_fn = ComputeXLoss(model, {})
    losses = []
    for enabled in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            preds = model(images)
        loss, _ = loss_fn(preds, targets)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        losses.append(loss.item())
    assert loss.dtype == torch.float32 and losses[1] == pytest.approx(losses[0], rel=0.05)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_usable_cores_follows_the_affinity_mask():
    """A run pinned to one core (taskset) plans its threads for one core, not the machine's count."""
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, before)
    assert usable_cores() == len(before)
