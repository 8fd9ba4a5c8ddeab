"""train.py end to end on a tiny demo set: outputs, checkpoints, resume after a kill, DDP, schedules."""
import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from models.yolo import Model, load_model, load_pretrained
from utils.checkpoints import save_checkpoint
from utils.config import load_hyp
from utils.data.demo import generate_demo_dataset
from utils.train.schedule import LRSchedule, warmup

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    generate_demo_dataset(root / "ds", seed=2, n_train=16, n_val=4, img_size=(64, 64), progress=False)
    data = root / "tiny.yaml"
    from utils.data.demo import DEMO_NAMES

    data.write_text(yaml.safe_dump({"path": "ds", "train": "images/train", "val": "images/val",
                                    "val_json": "annotations/instances_val.json", "names": DEMO_NAMES}))
    return data


def run_train(args, cwd, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def base_args(data, project, name, epochs=2):
    return ["--data", str(data), "--cfg", "models/yoloxn.yaml", "--img-size", "64", "--batch-size", "8",
            "--epochs", str(epochs), "--workers", "0", "--device", "cpu", "--project", str(project), "--name", name]


def test_two_epochs_end_to_end(tiny_data, tmp_path):
    r = run_train(base_args(tiny_data, tmp_path, "e2e"), cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "e2e"
    for f in ("weights/last.pt", "weights/best.pt", "results.csv", "results.png", "hyp.yaml", "opt.yaml",
              "labels.jpg", "train_batch0.jpg"):
        assert (run / f).is_file() or f == "weights/best.pt", f
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"train/iou_loss", "metrics/mAP_0.5:0.95", "x/lr0"} <= set(rows[0])
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["names"][0] == "circle" and "optimizer" in ckpt
    model = load_model(run / "weights" / "last.pt")
    assert model.nc == 8 and model(torch.zeros(1, 3, 64, 64)).shape == (1, 84, 13)


def test_resume_after_sigkill_finishes_all_epochs(tiny_data, tmp_path):
    epochs = 6
    args = base_args(tiny_data, tmp_path, "killed", epochs=epochs)
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "weights" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():  # epoch 0 saved: the run is inside epoch 1
            break
        time.sleep(0.2)
    if proc.poll() is not None:
        pytest.skip("training finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch_saved = torch.load(last, weights_only=True)["epoch"]
    assert epoch_saved < epochs - 1
    r = run_train(["--resume", str(last), "--workers", "0"], cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert torch.load(last, weights_only=True)["epoch"] == epochs - 1
    rows = list(csv.DictReader(open(tmp_path / "killed" / "results.csv")))
    assert int(rows[-1]["epoch"]) == epochs - 1
    r = run_train(["--resume", str(last)], cwd=ROOT)
    assert r.returncode != 0 and "already finished" in r.stderr


def test_resume_continues_exactly(tiny_data, tmp_path):
    """Resuming from an epoch checkpoint ends with the weights of the uninterrupted run: schedule position,
    optimizer, EMA, augmentation per epoch and the mosaic switch all carry over."""
    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch.yolox.yaml").read_text())
    hyp.update(warmup_epochs=0, nbs=24)  # steps of 3 batches of 8, across the epochs' ends (2 batches each)
    (tmp_path / "hyp.yaml").write_text(yaml.safe_dump(hyp))
    args = base_args(tiny_data, tmp_path, "straight", epochs=3) + ["--save-period", "1", "--noval", "--noplots",
                                                                   "--hyp", str(tmp_path / "hyp.yaml")]
    r = run_train(args, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    weights = tmp_path / "straight" / "weights"
    straight = torch.load(weights / "last.pt", weights_only=True)
    assert straight["epoch"] == 2 and straight["hyp"]["no_aug_epochs"] > 0  # the last epoch runs without mosaic
    r = run_train(["--resume", str(weights / "epoch0.pt"), "--workers", "0"], cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    resumed = torch.load(weights / "last.pt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["updates"] == straight["updates"]
    for part in ("model", "ema"):
        for k, v in straight[part].items():
            torch.testing.assert_close(resumed[part][k], v, rtol=1e-5, atol=1e-6, msg=lambda m: f"{part}.{k}: {m}")


def test_ddp_two_cpu_processes(tiny_data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(ROOT / "train.py"), *base_args(tiny_data, tmp_path, "ddp", epochs=1)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "ddp" / "weights" / "last.pt").is_file()
    assert not (tmp_path / "ddp2").exists()  # one run folder, written by rank 0 only


def test_legacy_launch_passes_local_rank(tiny_data, tmp_path):
    """The older `python -m torch.distributed.launch` form of seed 004 (it passes --local-rank=N)."""
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "2", "--master_port", "29535",
           str(ROOT / "train.py"), *base_args(tiny_data, tmp_path, "launch", epochs=1), "--noval"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "DDP: gloo backend, world size 2" in r.stdout
    assert (tmp_path / "launch" / "weights" / "last.pt").is_file()


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


def test_loss_falls_on_an_easy_set(tiny_data):
    """A few hundred steps on 8 fixed images: the loss must fall well below its start."""
    from utils.data.datasets import create_dataloader
    from utils.loss.yolox_loss import ComputeXLoss
    from utils.train.optim import build_optimizer

    data = yaml.safe_load(open(tiny_data))
    torch.manual_seed(0)
    model = Model("models/yoloxn.yaml", nc=8).train()
    loader, _ = create_dataloader(str(tiny_data.parent / "ds" / "images" / "train"), 64, 8, 32, nc=8, workers=0)
    images, targets, _, _ = next(iter(loader))
    images = images.float()
    loss_fn = ComputeXLoss(model, {})
    opt = build_optimizer(model, 0.01, 0.9, 5e-4)
    losses = []
    for step in range(200):
        loss, _ = loss_fn(model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert all(math.isfinite(x) for x in losses) and last < 0.5 * first, (first, last)


def test_hyp_unknown_and_missing_keys(tmp_path, caplog):
    p = tmp_path / "h.yaml"
    p.write_text("lr0: 0.01\nmomentun: 0.9\n")
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) 'momentun' \(did you mean 'momentum'\?\)"):
        load_hyp(p)
    p.write_text("lr0: 0.02\n")
    hyp = load_hyp(p)
    assert hyp["lr0"] == 0.02 and hyp["momentum"] == 0.937
    assert "missing hyperparameter(s)" in caplog.text and "momentum" in caplog.text
    p.write_text("lr0: fast\n")
    with pytest.raises(ValueError, match="'lr0' must be float"):
        load_hyp(p)
    p.write_text("scheduler: step\n")
    with pytest.raises(ValueError, match="'scheduler' must be one of"):
        load_hyp(p)
    for f in ("hyp.scratch.yolox.yaml", "hyp.yolox.official.yaml"):
        load_hyp(ROOT / "data" / "hyps" / f)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_choice_keeps_the_three_groups(name):
    from utils.train.optim import build_optimizer

    model = Model("models/yoloxn.yaml", nc=8)
    opt = build_optimizer(model, 0.002, 0.9, 5e-4, name=name)
    assert type(opt).__name__ == name and len(opt.param_groups) == 3
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    if name != "SGD":
        assert all(g["betas"] == (0.9, 0.999) for g in opt.param_groups)
    with pytest.raises(ValueError, match=r"'optimizer' must be one of \('SGD', 'Adam', 'AdamW'\), got 'RMSprop'"):
        build_optimizer(model, 0.01, 0.9, 0.0, name="RMSprop")


def test_hyp_optimizer_key_is_checked(tmp_path):
    p = tmp_path / "h.yaml"
    p.write_text("optimizer: Lion\n")
    with pytest.raises(ValueError, match="'optimizer' must be one of"):
        load_hyp(p)
    p.write_text("optimizer: AdamW\n")
    assert load_hyp(p)["optimizer"] == "AdamW"
    assert load_hyp(ROOT / "data" / "hyps" / "hyp.demo.yaml")["optimizer"] in ("SGD", "Adam", "AdamW")


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
    from utils.loss.yolox_loss import ComputeXLoss

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


def test_schedules_and_warmup():
    s = LRSchedule("yolox_cos", epochs=300, lrf=0.05, warmup_epochs=5, no_aug_epochs=15)
    assert s.factor(5) == pytest.approx(1.0) and s.factor(285) == pytest.approx(0.05)
    assert s.factor(295) == pytest.approx(0.05) and s.factor(145) == pytest.approx(0.525)
    lin = LRSchedule("linear", epochs=10, lrf=0.2)
    assert lin.factor(0) == 1.0 and lin.factor(10) == pytest.approx(0.2)
    cos = LRSchedule("cos", epochs=10, lrf=0.2)
    assert cos.factor(5) == pytest.approx(0.6)
    assert warmup(50, 100, 0.01, 0.1) == pytest.approx(0.055)
    assert warmup(50, 100, 0.01, 0.0, quadratic=True) == pytest.approx(0.0025)
    assert warmup(100, 100, 0.01, 0.1) == 0.01


def test_finetune_onto_another_nc_reinitialises_only_class_predictions(tmp_path, caplog):
    import logging

    source = Model("models/yoloxn.yaml", nc=80)
    path = save_checkpoint(tmp_path / "w.pt", {"model": source.state_dict(), "yaml": source.yaml})
    target = Model("models/yoloxn.yaml", nc=5)
    fresh = target.model[-1].cls_preds[0].weight.clone()
    with caplog.at_level(logging.INFO):
        load_pretrained(target, path)
    assert "class predictions re-initialised for nc=5 (checkpoint has nc=80)" in caplog.text
    assert torch.equal(target.model[-1].cls_preds[0].weight, fresh)
    assert torch.equal(target.model[0].conv.conv.weight, source.model[0].conv.conv.weight)
    assert torch.equal(target.model[-1].reg_preds[0].weight, source.model[-1].reg_preds[0].weight)
    with pytest.raises(ValueError, match="does not fit the model"):
        load_pretrained(Model("models/yoloxs.yaml", nc=5), path)
