"""Training loader throughput and label verification beside YOLOv5's and ultralytics', each loader in
its own environment.

Each loader runs as its users install it, in a virtual environment of its own
(``bash benchmarks/loader_envs.sh DIR`` makes them: ours with ``pip install -e .``, YOLOv5 with
``pip install yolov5==7.0.14``, ultralytics with ``pip install 'ultralytics<9'``; the two
references get torch 2.14.1 with torchvision 0.29.1, the pair that imports together here), on the
same images, with its own default augmentation file:

    python -m benchmarks.bench_loaders --envs DIR --repeats 3                 # the comparison
    python -m benchmarks.bench_loaders --envs DIR --partner-batches 1 4       # and ours-pb1, ours-pb4
    python benchmarks/bench_loaders.py --run yolov5 --data D --mixup 1        # one loader, in its env

The driver (run where this project is importable) writes the built-in demo data set, 300 640x480
JPEGs by default, and gives each environment its own hard-linked copy (the same bytes; all three
write a label cache named labels/train.cache). Then, for each loader in turn, one process per
measurement: build the loader without its label cache and again with it (both timed: label
verification), with image size 640, batch 16, 2 workers (--workers), shuffle and augmentation;
draw one warm-up epoch, then time one epoch. Settings: mosaic 1.0 with mixup 0 (every default
file's value), and mixup 1.0 (YOLOv5's and ultralytics' only mixup, a blend with a second mosaic;
ours with ``mixup_mode: yolov5``). The other augmentation values are the three defaults, which
agree: HSV 0.015/0.7/0.4, translate 0.1, scale 0.5, fliplr 0.5, no rotation, shear or perspective.
``ours-pbN`` is ours with hyp ``partner_batches: N`` (utils/data/partner_pool.py: where mosaic and
mixup find their other images). --repeats N interleaves N rounds and reports the median; on a
shared 2-core machine single runs spread by about 10%. Timings need an otherwise idle machine.

YOLOv5's and ultralytics' loaders are infinite: their workers go on into the next epoch while the
last batch of one is consumed, so the timed epoch starts with up to one batch per worker under
way. Ours restarts its persistent workers at each epoch. Against ours, this favours them slightly.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {"mosaic": 0.0, "mosaic+mixup": 1.0}  # name -> mixup probability (mosaic 1.0 in both)
IMG_SIZE, STRIDE, NC = 640, 32, 8
REPO = Path(__file__).resolve().parents[1]


# ---- one loader, in its own environment ------------------------------------------------------------
def build_ours(images: str, batch: int, workers: int, mixup: float, partner_batches: int | None = None):
    import yaml

    from utils.data.datasets import create_dataloader

    hyp = yaml.safe_load((REPO / "data" / "hyps" / "hyp.scratch.yolox.yaml").read_text())
    hyp.update(mixup=mixup, mixup_mode="yolov5")
    if partner_batches is not None:  # else the file's (or utils/config.py's) default
        hyp["partner_batches"] = partner_batches
    loader, dataset = create_dataloader(images, IMG_SIZE, batch, STRIDE, hyp=hyp, augment=True,
                                        workers=workers, shuffle=True)

    def new_epoch(epoch: int) -> None:  # what utils/train/trainer.py does at each epoch
        dataset.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)

    return loader, new_epoch


def build_yolov5(images: str, batch: int, workers: int, mixup: float):
    import yaml
    import yolov5
    from yolov5.utils.dataloaders import create_dataloader

    hyp_file = Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml"  # train.py's default
    hyp = {**yaml.safe_load(hyp_file.read_text()), "mixup": mixup}
    loader, _ = create_dataloader(images, IMG_SIZE, batch, STRIDE, hyp=hyp, augment=True, workers=workers,
                                  shuffle=True)
    return loader, lambda epoch: None  # train.py does nothing per epoch without DDP


def build_ultralytics(images: str, batch: int, workers: int, mixup: float):
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader, build_yolo_dataset

    cfg = get_cfg(overrides={"imgsz": IMG_SIZE, "batch": batch, "workers": workers, "mixup": mixup})
    data = {"names": {i: f"class{i}" for i in range(NC)}, "nc": NC, "channels": 3}
    dataset = build_yolo_dataset(cfg, images, batch, data, mode="train", stride=STRIDE)  # as DetectionTrainer
    loader = build_dataloader(dataset, batch, workers, shuffle=True, device="cpu")
    return loader, lambda epoch: None  # the trainer resets the loader only when closing mosaic


REFERENCES = {"yolov5": build_yolov5, "ultralytics": build_ultralytics}


def builder(name: str):
    """The build function of a loader name: ours, ours-pbN (ours with hyp partner_batches N), a reference."""
    if name == "ours":
        return build_ours
    match = re.fullmatch(r"ours-pb(\d+)", name)
    if match:
        return functools.partial(build_ours, partner_batches=int(match.group(1)))
    if name in REFERENCES:
        return REFERENCES[name]
    raise SystemExit(f"bench_loaders: unknown loader {name!r} (ours, ours-pbN, {', '.join(REFERENCES)})")


def env_of(name: str) -> str:
    """The environment a loader runs in: benchmarks/loader_envs.sh's folder name."""
    return "ours" if name.startswith("ours") else name


def versions(loader: str) -> dict:
    import cv2
    import numpy
    import torch

    package = None if env_of(loader) == "ours" else loader
    out = {"torch": torch.__version__, "opencv": cv2.__version__, "numpy": numpy.__version__}
    if package:
        out[package] = __import__(package).__version__
    return out


def batch_size(batch) -> int:
    """Images in a batch: ultralytics yields a dict, the YOLOv5-style loaders a tuple led by the images."""
    return len(batch["img"] if isinstance(batch, dict) else batch[0])


def label_cache(images: str) -> Path:
    """Where all three write their label cache: labels/train.cache beside images/train."""
    return Path(images).parents[1] / "labels" / "train.cache"


def measure(loader_name: str, images: str, batch: int, workers: int, mixup: float) -> dict:
    """Build the loader without and with its label cache (timed: label verification), draw a warm-up
    epoch, time one epoch -> a result dict."""
    build = builder(loader_name)
    label_cache(images).unlink(missing_ok=True)
    t0 = time.perf_counter()
    build(images, batch, workers, mixup)
    t1 = time.perf_counter()
    loader, new_epoch = build(images, batch, workers, mixup)
    verify = {"verify_s": t1 - t0, "cached_s": time.perf_counter() - t1}
    counted = {}
    for epoch in range(2):  # 0: warm-up (starts the workers), 1: timed
        new_epoch(epoch)
        t0 = time.perf_counter()
        n = sum(batch_size(b) for b in loader)
        counted[epoch] = (n, time.perf_counter() - t0)
    n, seconds = counted[1]
    return {"loader": loader_name, "mixup": mixup, "images": n, "seconds": seconds, "img_s": n / seconds,
            "workers": workers, "batch": batch, **verify, **versions(loader_name)}


# ---- the driver: data, environments, table ----------------------------------------------------------
def prepare_data(root: Path, n_images: int) -> dict[str, str]:
    """The demo set in root/source, and one hard-linked copy per environment -> environment: its train images."""
    sys.path.insert(0, str(REPO))
    from utils.data.demo import ensure_demo_dataset

    source = ensure_demo_dataset(root / "source", seed=0, n_train=n_images, n_val=10, img_size=(480, 640),
                                 progress=False)
    for env in ("ours", *REFERENCES):
        for kind, suffix in (("images", ".jpg"), ("labels", ".txt")):
            (root / env / kind / "train").mkdir(parents=True, exist_ok=True)
            for f in (source / kind / "train").glob(f"*{suffix}"):
                target = root / env / kind / "train" / f.name
                if not target.exists():
                    os.link(f, target)
    return {env: str(root / env / "images" / "train") for env in ("ours", *REFERENCES)}


def environment_pythons(envs: Path) -> dict[str, str]:
    """environment name -> its python under envs (benchmarks/loader_envs.sh's names)."""
    pythons = {env: envs / env / "bin" / "python" for env in ("ours", *REFERENCES)}
    missing = sorted({str(p) for p in pythons.values() if not p.is_file()})
    if missing:
        raise SystemExit(f"bench_loaders: missing environments {missing}; make them with "
                         f"bash benchmarks/loader_envs.sh {envs}")
    return {k: str(v) for k, v in pythons.items()}


def run_in(python: str, loader: str, images: str, mixup: float, batch: int, workers: int) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--run", loader, "--data", images, "--mixup", str(mixup),
           "--batch", str(batch), "--workers", str(workers)]
    ours = env_of(loader) == "ours"
    env = {**os.environ, "YOLO_VERBOSE": "False", "PYTHONPATH": str(REPO) if ours else ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO if ours else "/")
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"bench_loaders: {loader} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def median_of(results: list[dict], key: str, **match) -> float:
    return statistics.median(r[key] for r in results if all(r[k] == v for k, v in match.items()))


def speed_table(results: list[dict], loaders: list[str], workers: int) -> str:
    rows = [f"| setting ({workers} workers) | loader | img/s (median) | runs | vs YOLOv5 | vs ultralytics |",
            "|---|---|---|---|---|---|"]
    for setting, mixup in SETTINGS.items():
        med = {name: median_of(results, "img_s", loader=name, mixup=mixup, workers=workers) for name in loaders}
        for name in loaders:
            runs = ", ".join(f"{r['img_s']:.0f}" for r in results
                             if r["loader"] == name and r["mixup"] == mixup and r["workers"] == workers)
            rows.append(f"| {setting} | {name} | {med[name]:.0f} | {runs} | {med[name] / med['yolov5']:.2f}x "
                        f"| {med[name] / med['ultralytics']:.2f}x |")
    return "\n".join(rows)


def verify_table(results: list[dict], loaders: list[str]) -> str:
    rows = ["| loader | label verification, no cache (s) | with its cache (s) |", "|---|---|---|"]
    for name in loaders:
        rows.append(f"| {name} | {median_of(results, 'verify_s', loader=name):.2f} "
                    f"| {median_of(results, 'cached_s', loader=name):.3f} |")
    return "\n".join(rows)


def drive(opt) -> None:
    pythons = environment_pythons(Path(opt.envs))
    paths = prepare_data(Path(opt.root), opt.images)
    loaders = ["ours", *(f"ours-pb{n}" for n in opt.partner_batches), *REFERENCES]
    print(f"{platform.machine()}, {os.cpu_count()} cores; {opt.images} images; batch {opt.batch}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for _ in range(opt.repeats):
        for workers in opt.workers:
            for mixup in SETTINGS.values():
                for name in loaders:
                    env = env_of(name)
                    results.append(run_in(pythons[env], name, paths[env], mixup, opt.batch, workers))
                    print(json.dumps(results[-1]), flush=True)
    for workers in opt.workers:
        print(speed_table(results, loaders, workers))
    print(verify_table(results, loaders))
    print(f"load average {os.getloadavg()[0]:.2f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", help="folder of the three environments (benchmarks/loader_envs.sh): run them all")
    p.add_argument("--root", default="/tmp/bench_loaders", help="where the driver writes the data")
    p.add_argument("--images", type=int, default=300, help="training images the driver generates")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the table gives the median")
    p.add_argument("--partner-batches", type=int, nargs="*", default=[],
                   help="also ours with these hyp partner_batches values (loaders ours-pbN)")
    p.add_argument("--run", help="measure this loader (ours, ours-pbN, yolov5, ultralytics) here: one JSON line")
    p.add_argument("--data", help="--run: the train images folder")
    p.add_argument("--mixup", type=float, default=0.0, help="--run: mixup probability (mosaic is 1.0)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="loader workers (the driver takes several)")
    opt = p.parse_args(argv)
    if bool(opt.envs) == bool(opt.run):
        p.error("give either --envs (the comparison) or --run with --data (one measurement)")
    if opt.run and not opt.data:
        p.error("--run needs --data")
    return opt


def main(argv=None) -> None:
    opt = parse_args(argv)
    if opt.run:
        print(json.dumps(measure(opt.run, opt.data, opt.batch, opt.workers[0], opt.mixup)), flush=True)
    else:
        drive(opt)


if __name__ == "__main__":
    main()
