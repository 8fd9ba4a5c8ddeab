"""train.py end to end on a tiny demo set: outputs, checkpoints, resume after a kill, DDP, learning."""
import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from models.weights import load_model
from models.yolo import Model
from tests.support import ROOT, free_port, run_train, train_args
from utils.checkpoints import save_checkpoint


def test_two_epochs_end_to_end(tiny_data, tmp_path):
    r = run_train(train_args(tiny_data, tmp_path, "e2e"), cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "e2e"
    for f in ("weights/last.pt", "weights/best.pt", "results.csv", "results.png", "hyp.yaml", "opt.yaml",
              "labels.jpg", "train_batch0.jpg"):
        assert (run / f).is_file(), f  # best.pt too: written whenever fitness equals the best so far, 0 included
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"train/iou_loss", "metrics/mAP_0.5:0.95", "x/lr0"} <= set(rows[0])
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["names"][0] == "circle" and "optimizer" in ckpt
    model = load_model(run / "weights" / "last.pt")
    assert model.nc == 8 and model(torch.zeros(1, 3, 64, 64)).shape == (1, 84, 13)


def test_resume_after_sigkill_finishes_all_epochs(tiny_data, tmp_path):
    epochs = 6
    args = train_args(tiny_data, tmp_path, "killed", epochs=epochs)
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


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A random DAMO-YOLO-S in this project's checkpoint format: a teacher of another family and width."""
    from utils.checkpoints import save_checkpoint

    torch.manual_seed(0)
    teacher = Model("models/damoyolo_s.yaml", nc=8)
    path = tmp_path_factory.mktemp("teacher") / "damoyolo_s.pt"
    save_checkpoint(path, {"model": teacher.state_dict(), "yaml": teacher.yaml, "names": teacher.names})
    return path


@pytest.mark.parametrize("cfg, distil", [("models/yoloxn.yaml", False), ("models/damoyolo_t.yaml", False),
                                         ("models/damoyolo_t.yaml", True)])  # YOLOX's loss, DAMO's, + --teacher
def test_resume_continues_exactly(tiny_data, tmp_path, cfg, distil, request):
    """Resuming from an epoch checkpoint ends with the weights of the uninterrupted run: schedule position,
    optimizer, EMA, augmentation per epoch and the mosaic switch all carry over; under --teacher the align
    convs and the distillation weight's position too."""
    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch.yolox.yaml").read_text())
    hyp.update(warmup_epochs=0, nbs=24)  # steps of 3 batches of 8, across the epochs' ends (2 batches each)
    if distil:
        hyp.update(distill_weight=0.5, distill_ramp_epochs=1.5)  # DAMO's paper's weight; a ramp across the resume
    (tmp_path / "hyp.yaml").write_text(yaml.safe_dump(hyp))
    args = train_args(tiny_data, tmp_path, "straight", epochs=3) + ["--save-period", "1", "--noval", "--noplots",
                                                                   "--hyp", str(tmp_path / "hyp.yaml")]
    args[args.index("--cfg") + 1] = cfg
    if distil:
        args += ["--teacher", str(request.getfixturevalue("teacher_ckpt"))]
    r = run_train(args, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert ("weight 0.5 -> 0.05 by cosine over all iterations, ramping in from 0 over 1.5 epochs"
            in r.stdout + r.stderr) == distil
    weights = tmp_path / "straight" / "weights"
    straight = torch.load(weights / "last.pt", weights_only=True)
    assert straight["epoch"] == 2 and straight["hyp"]["no_aug_epochs"] > 0  # the last epoch runs without mosaic
    r = run_train(["--resume", str(weights / "epoch0.pt"), "--workers", "0"], cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    resumed = torch.load(weights / "last.pt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["updates"] == straight["updates"]
    assert ("distill" in straight) == distil
    for part in ("model", "ema") + (("distill",) if distil else ()):
        for k, v in straight[part].items():
            torch.testing.assert_close(resumed[part][k], v, rtol=1e-5, atol=1e-6, msg=lambda m: f"{part}.{k}: {m}")


@pytest.mark.parametrize("data", ["data/demo.yaml", "coco.yaml"])
def test_qat_takes_its_gentle_hyp_unless_given_one(data):
    """--qat without --hyp fine-tunes with data/hyps/hyp.qat.yaml on any data (a valid hyp file: no warm-up,
    no mosaic, at most a hundredth of hyp.demo's lr); a --hyp given wins."""
    import train
    from utils.config import load_hyp

    opt = train.apply_defaults(train.parse_opt(["--weights", "w.pt", "--qat", "--data", data]))
    assert opt.hyp == train.QAT_HYP
    hyp = load_hyp(str(ROOT / opt.hyp))
    demo = load_hyp(str(ROOT / "data" / "hyps" / "hyp.demo.yaml"))
    assert hyp["mosaic"] == hyp["warmup_epochs"] == hyp["no_aug_epochs"] == 0 and hyp["lr0"] <= demo["lr0"] / 100
    given = train.apply_defaults(train.parse_opt(["--weights", "w.pt", "--qat", "--data", data, "--hyp", "mine.yaml"]))
    assert given.hyp == "mine.yaml"


@pytest.fixture(scope="module")
def float_start(tiny_data, tmp_path_factory):
    """A float yoloxn trained one epoch (trained BatchNorm statistics: features that do not vanish, as a fresh
    model's do): the --weights of the QAT tests, which must not write into it."""
    tmp = tmp_path_factory.mktemp("float_start")
    r = run_train(train_args(tiny_data, tmp, "float", epochs=1) + ["--noval", "--noplots"], cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp / "float" / "weights" / "last.pt"


def test_qat_fine_tuning_resumes_exactly_and_loads_as_its_model(tiny_data, tmp_path, float_start):
    """train.py --qat from a float checkpoint (its YAML, no --cfg): the folded, fake-quantised model trains;
    an interrupted run resumes to the same weights and activation ranges; last.pt loads as that model."""
    from utils.quant.prepare import QATModel

    start = float_start
    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch.yolox.yaml").read_text())
    hyp.update(warmup_epochs=0, nbs=24)
    (tmp_path / "hyp.yaml").write_text(yaml.safe_dump(hyp))
    args = train_args(tiny_data, tmp_path, "qat", epochs=3) + ["--save-period", "1", "--noval", "--noplots",
                                                              "--hyp", str(tmp_path / "hyp.yaml"), "--weights", str(start),
                                                              "--qat", "--qat-target", "rknn"]
    del args[args.index("--cfg"):args.index("--cfg") + 2]
    r = run_train(args, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "activation quantisers (asymmetric [-128, 127])" in r.stdout + r.stderr
    weights = tmp_path / "qat" / "weights"
    straight = torch.load(weights / "last.pt", weights_only=True)
    assert straight["qat"] == {"target": "rknn", "imgsz": 64}
    assert any(k.endswith(".lo") for k in straight["model"]) and not any("bn." in k for k in straight["model"])
    r = run_train(["--resume", str(weights / "epoch0.pt"), "--workers", "0"], cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    resumed = torch.load(weights / "last.pt", weights_only=True)
    for part in ("model", "ema"):
        for k, v in straight[part].items():
            torch.testing.assert_close(resumed[part][k], v, rtol=1e-5, atol=1e-6, msg=lambda m: f"{part}.{k}: {m}")
    model = load_model(weights / "last.pt")
    assert isinstance(model, QATModel) and not model.training
    assert model(torch.rand(1, 3, 64, 64) * 255).shape == (1, 84, 13)
    r = run_train(train_args(tiny_data, tmp_path, "again") + ["--weights", str(weights / "last.pt")], cwd=ROOT)
    assert r.returncode != 0 and "a --qat checkpoint" in r.stderr
    import onnx

    import export

    with pytest.raises(ValueError, match="needs --opset 13"):
        export.run(weights=str(weights / "last.pt"), img_size=64, opset=12)
    results = export.run(weights=str(weights / "last.pt"), img_size=64, opset=13, deploy=True)
    assert results["verification"][0].ok  # onnxruntime's int8 kernels against the fake-quantised model, by cosine
    exported = onnx.load(str(results["onnx"]))
    assert sum(n.op_type == "QuantizeLinear" for n in exported.graph.node) >= len(model.quantizers())
    assert "rknn" in {p.key: p.value for p in exported.metadata_props}["quantization"]


def test_qat_percentile_ranges_are_calibrated_once_and_held_through_resume(tiny_data, tmp_path, float_start):
    """--qat-ranges percentile: the ranges are those fix_percentile_ranges sets on the export's calibration
    images (the first 100 training images) and stay so through training and --resume."""
    from utils.export.int8 import calibration_images
    from utils.quant.calibrate import fix_percentile_ranges
    from utils.quant.fake_quant import SCHEMES
    from utils.quant.prepare import prepare_qat

    start = float_start
    args = train_args(tiny_data, tmp_path, "qat", epochs=2) + ["--save-period", "1", "--noval", "--noplots",
                                                              "--weights", str(start), "--qat", "--qat-ranges", "percentile"]
    r = run_train(args, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "activation ranges at the 99.99 percentile of" in r.stdout + r.stderr
    weights = tmp_path / "qat" / "weights"
    ranges = lambda ckpt: {k: v for k, v in ckpt["model"].items() if k.endswith((".lo", ".hi"))}  # noqa: E731
    straight, first = (torch.load(weights / f, weights_only=True) for f in ("last.pt", "epoch0.pt"))
    assert ranges(straight) and all(torch.equal(v, ranges(first)[k]) for k, v in ranges(straight).items())
    reference = prepare_qat(load_model(start), SCHEMES["qdq"], torch.zeros(1, 3, 64, 64))
    fix_percentile_ranges(reference, calibration_images(str(tiny_data), 100, (64, 64)))
    want = {k: v for k, v in reference.state_dict().items() if k.endswith((".lo", ".hi"))}
    assert want.keys() == ranges(straight).keys()
    for k, v in want.items():
        torch.testing.assert_close(ranges(straight)[k], v, rtol=1e-5, atol=1e-5, msg=lambda m: f"{k}: {m}")
    r = run_train(["--resume", str(weights / "epoch0.pt"), "--workers", "0"], cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    resumed = torch.load(weights / "last.pt", weights_only=True)
    assert all(torch.equal(v, ranges(resumed)[k]) for k, v in ranges(straight).items())


# plain yoloxn under DDP: test_legacy_launch_passes_local_rank (the same run, launched the older way)
@pytest.mark.parametrize("cfg, mode", [("models/damoyolo_t.yaml", None),  # DAMO's loss all-reduces
                                       ("models/yoloxn.yaml", "distil"),  # the align convs are a second DDP module
                                       ("models/yoloxn.yaml", "qat")])  # observed ranges: buffers, rank 0's broadcast
def test_ddp_two_cpu_processes(tiny_data, tmp_path, cfg, mode, request):
    distil = mode == "distil"
    args = train_args(tiny_data, tmp_path, "ddp", epochs=1)
    args[args.index("--cfg") + 1] = cfg
    if distil:  # with a ramp longer than the run, which the trainer warns about
        hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch.yolox.yaml").read_text())
        (tmp_path / "hyp.yaml").write_text(yaml.safe_dump({**hyp, "distill_ramp_epochs": 2.0}))
        args += ["--teacher", str(request.getfixturevalue("teacher_ckpt")), "--hyp", str(tmp_path / "hyp.yaml")]
    if mode == "qat":  # from a float checkpoint, its YAML
        float_model = Model(cfg, nc=8)
        start = save_checkpoint(tmp_path / "float.pt", {"model": float_model.state_dict(), "yaml": float_model.yaml,
                                                         "names": float_model.names})
        del args[args.index("--cfg"):args.index("--cfg") + 2]
        args += ["--weights", str(start), "--qat"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "train.py"), *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "ddp" / "weights" / "last.pt").is_file()
    assert not (tmp_path / "ddp2").exists()  # one run folder, written by rank 0 only
    if distil:  # a loss column of its own; the align convs go into last.pt for --resume, not into the model
        columns = next(csv.reader(open(tmp_path / "ddp" / "results.csv")))
        assert "train/distill" in columns and "val/distill" not in columns
        assert "teacher forward:" in r.stdout + r.stderr
        assert "distill_ramp_epochs 2 >= --epochs 1: the distillation weight never finishes" in r.stdout + r.stderr
        last = tmp_path / "ddp" / "weights" / "last.pt"
        assert torch.load(last, weights_only=True)["distill"]["align_module.0.weight"].shape == (128, 64, 1, 1)
        assert sum(p.numel() for p in load_model(last).parameters()) == sum(
            p.numel() for p in Model(cfg, nc=8).parameters())
    if mode == "qat":  # the fine-tuned model is the fake-quantised one, its ranges observed in training
        from utils.quant.prepare import QATModel

        model = load_model(tmp_path / "ddp" / "weights" / "last.pt")
        quantizers = model.quantizers()
        assert isinstance(model, QATModel) and quantizers and all(bool(q.initialised) for q in quantizers)
        assert all(float(q.lo) <= float(q.hi) for q in quantizers) and any(float(q.hi) > 10 for q in quantizers)


def test_legacy_launch_passes_local_rank(tiny_data, tmp_path):
    """The older `python -m torch.distributed.launch` form of seed 004 (it passes --local-rank=N); also
    test_ddp_two_cpu_processes' plain yoloxn case."""
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "train.py"), *train_args(tiny_data, tmp_path, "launch", epochs=1), "--noval"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "DDP: gloo backend, world size 2" in r.stdout
    assert (tmp_path / "launch" / "weights" / "last.pt").is_file()
    assert not (tmp_path / "launch2").exists()  # one run folder, written by rank 0 only


def test_loss_falls_on_an_easy_set(tiny_data):
    """A few hundred steps on 8 fixed images: the loss must fall well below its start."""
    from utils.data.datasets import create_dataloader
    from utils.loss import ComputeXLoss
    from utils.train.optim import build_optimizer

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




def test_user_errors_are_one_line(tiny_data, tmp_path, capsys):
    """train.py ends user errors in one line (no traceback) and checks option values where it parses them."""
    import train

    with pytest.raises(SystemExit, match=r"^train.py: dataset description not found: .*missing.yaml$"):
        train.main(["--data", str(tmp_path / "missing.yaml"), "--cfg", "models/yoloxn.yaml", "--device", "cpu",
                    "--project", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^train.py: model file not found: .*none.yaml$"):
        train.main(["--data", str(tiny_data), "--cfg", str(tmp_path / "none.yaml"), "--device", "cpu", "--workers", "0",
                    "--img-size", "64", "--project", str(tmp_path)])
    for flag, value in (("--batch-size", "0"), ("--epochs", "-1"), ("--workers", "-2")):
        with pytest.raises(SystemExit) as e:
            train.main([flag, value])
        assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
