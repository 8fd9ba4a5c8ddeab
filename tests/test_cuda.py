"""CUDA paths: the batched SimOTA assigner and ComputeXLoss on a GPU equal their CPU results and official
YOLOX's, float16 AMP training steps, train.py on a GPU, DDP over NCCL with SyncBatchNorm, and the legacy
torch.distributed.launch form. Skipped without CUDA (CI has none); on a GPU machine:

    python -m pytest tests/test_cuda.py -q
"""
import csv
import os
import subprocess
import sys

import pytest
import torch

from models.weights import load_model
from models.yolo import Model
from tests.simota_reference import official_losses
from tests.support import ASSIGNMENT_CASES as CASES
from tests.support import ROOT, STRIDES, case_inputs, free_port, random_targets, run_train, train_args
from tests.support import tiny_detect_model as make_model
from utils.loss import ComputeXLoss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CUDA = torch.device("cuda", 0)


def cuda_args(data, project, name, epochs=2, device="0"):
    args = train_args(data, project, name, epochs=epochs)
    args[args.index("--device") + 1] = device
    return args


@pytest.mark.parametrize("prior", ["center", "box_or_center"])
@pytest.mark.parametrize("case", list(CASES))
def test_assignment_and_loss_on_cuda_equal_cpu(case, prior):
    nc = 20
    preds, targets = case_inputs(case, nc, seed=len(case))
    loss_fn = ComputeXLoss(make_model(nc), {"simota_prior": prior})
    loss_fn.use_l1 = True
    cpu = loss_fn.assign(preds, targets)
    _, items_cpu = loss_fn(preds, targets)
    preds_gpu, targets_gpu = [p.to(CUDA) for p in preds], targets.to(CUDA)
    gpu = loss_fn.assign(preds_gpu, targets_gpu)
    _, items_gpu = loss_fn(preds_gpu, targets_gpu)
    assert items_gpu.device.type == "cuda"
    assert torch.equal(gpu.fg_mask.cpu(), cpu.fg_mask), "foreground masks differ between CUDA and CPU"
    fg = cpu.fg_mask
    assert torch.equal(gpu.matched_gt.cpu()[fg], cpu.matched_gt[fg])
    assert torch.equal(gpu.matched_class.cpu()[fg], cpu.matched_class[fg])
    torch.testing.assert_close(items_gpu.cpu(), items_cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["one_gt", "mixed_empty", "many", "crowded_200"])
def test_box_or_center_on_cuda_equals_official_get_losses(yolox_pkg, case):
    nc = 20
    preds, targets = case_inputs(case, nc, seed=7)
    preds, targets = [p.to(CUDA) for p in preds], targets.to(CUDA)
    loss_fn = ComputeXLoss(make_model(nc), {"simota_prior": "box_or_center"})
    for use_l1 in (False, True):
        loss_fn.use_l1 = use_l1
        _, items = loss_fn(preds, targets)
        expected = official_losses(preds, targets, STRIDES, nc, use_l1)
        torch.testing.assert_close(items.cpu(), expected.cpu(), rtol=1e-5, atol=1e-6)


def test_float16_amp_steps_are_finite_and_close_to_float32():
    torch.manual_seed(0)
    model = Model("models/yoloxs.yaml").to(CUDA).train()
    loss_fn = ComputeXLoss(model, {})
    images = torch.rand(4, 3, 320, 320, device=CUDA) * 255
    targets = random_targets([6, 3, 0, 12], 80, seed=3).to(CUDA)
    with torch.no_grad():
        loss32, _ = loss_fn(model(images), targets)
        with torch.autocast("cuda", dtype=torch.float16):
            preds16 = model(images)
        loss16, items16 = loss_fn(preds16, targets)
    assert all(p.dtype == torch.float16 for p in preds16), "autocast did not run the network in float16"
    assert items16.dtype == torch.float32  # the loss itself stays float32
    assert abs(loss16.item() - loss32.item()) < 0.02 * loss32.item(), (loss16.item(), loss32.item())

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    losses = []
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.float16):
            preds = model(images)
        loss, _ = loss_fn(preds, targets)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert scaler.get_scale() > 0


def test_train_on_cuda_with_amp_end_to_end(tiny_data, tmp_path):  
    r = run_train(cuda_args(tiny_data, tmp_path, "gpu"), cwd=ROOT)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "float16 autocast" in log
    run = tmp_path / "gpu"
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True, map_location="cpu")
    assert ckpt["scaler"] and ckpt["scaler"]["scale"] > 0  # GradScaler state saved for --resume
    model = load_model(run / "weights" / "last.pt")
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 84, 13)


def ddp_command(module, nproc, port, args):
    return [sys.executable, "-m", module, "--nproc_per_node", str(nproc), "--master_port", str(port),
            str(ROOT / "train.py"), *args]


def test_ddp_nccl_with_sync_bn(tiny_data, tmp_path):  
    n = min(torch.cuda.device_count(), 2)
    devices = ",".join(str(i) for i in range(n))
    cmd = ddp_command("torch.distributed.run", n, free_port(), [*cuda_args(tiny_data, tmp_path, "nccl", 1, devices), "--sync-bn"])
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert f"DDP: nccl backend, world size {n}" in log, log[-3000:]
    assert "SyncBatchNorm layers" in log
    ckpt = torch.load(tmp_path / "nccl" / "weights" / "last.pt", weights_only=True, map_location="cpu")
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped
    model = load_model(tmp_path / "nccl" / "weights" / "last.pt")
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


def test_legacy_launch_passes_local_rank_on_cuda(tiny_data, tmp_path):  
    cmd = ddp_command("torch.distributed.launch", 1, free_port(), cuda_args(tiny_data, tmp_path, "launch", 1))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (tmp_path / "launch" / "weights" / "last.pt").is_file()
