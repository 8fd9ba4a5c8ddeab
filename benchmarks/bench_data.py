"""Benchmark the training data path: label verification and augmented loader throughput, beside YOLOv5's.

Run from the repository root as a module (``tests.reference`` lives in the repo, not in the
installed package):

    python -m benchmarks.bench_data                                   # defaults: 300 images, batch 16
    python -m benchmarks.bench_data --images 64 --batches 3 --workers 0   # a quick check
    python -m benchmarks.bench_data --yolov5-path /tmp/y5/ext         # with YOLOv5's loader beside ours

It draws a demo dataset (``utils.data.demo.generate_demo_dataset``: --images 640x480 JPEGs in the
YOLO layout) into a temporary folder, or into --root, and measures:

1. Label verification: constructing ``utils.data.datasets.LoadImagesAndLabels`` (augment=True) with no
   label cache file present, then again with the cache it wrote. Ours verifies with
   ``workers = max(--workers)`` processes (one in-process pass below 2 or under 64 images); YOLOv5
   verifies with a Pool of its NUM_THREADS = min(8, cores - 1) processes (in-process with workers 0).
2. Loader throughput: images/s of ``create_dataloader(path, 640, --batch, 32, hyp, augment=True,
   workers=W, shuffle=True)`` at each W of --workers, with mosaic 1.0 and mixup 1.0, for ours with
   both ``mixup_mode`` values (yolov5: blend with a second mosaic; yolox: paste a scale-jittered
   image) and for YOLOv5 (only its own mixup: a second mosaic, like ours in yolov5 mode). The
   other augmentation values come from data/hyps/hyp.scratch.yolox.yaml and are given to both
   (hsv 0.015/0.7/0.4, translate 0.1, scale 0.5, fliplr 0.5, no rotation/shear/perspective).
   --warmup batches are drawn untimed (they include starting the workers), then --batches are
   timed; an epoch boundary, where one falls inside, is crossed as training crosses it. With
   workers > 0, batches the workers prefetched during the warm-up are counted as well (at most
   2 per worker, for both loaders alike). --repeats > 1 reports the median of interleaved repeats.

YOLOv5 is the PyPI package ``yolov5`` (ultralytics YOLOv5 code with ``yolov5.`` imports). It is
optional and never needed by CI: with neither --yolov5-path nor an installed ``yolov5`` the script
says so and reports ours alone. To measure it without installing anything (it would pull in
dependencies that replace torch):

    pip download --no-deps yolov5 -d /tmp/y5 && python -m zipfile -e /tmp/y5/yolov5-*.whl /tmp/y5/ext

and pass ``--yolov5-path /tmp/y5/ext``. Only ``yolov5.utils.dataloaders`` is imported (its package
``__init__`` is skipped: it loads models and hub helpers). Modules it imports but this
environment lacks (torchvision, which cannot be installed beside this torch; pandas;
pkg_resources; ultralytics.utils.checks) are replaced by stubs in this process only; none of
them is used on the loading path. YOLOv5 reads the same images and labels through a folder of
symlinks, so its ``labels/train.cache`` does not overwrite ours (both are named alike).

Each loader runs as it ships: importing YOLOv5 calls ``cv2.setNumThreads(0)`` (so its workers=0
runs keep OpenCV single-threaded); this script restores OpenCV's default for ours, whose workers
set 0 in their init function. Ratio = ours img/s / YOLOv5 img/s (> 1: ours is faster); the issue's
target is >= 1.5 for ours with mixup_mode yolov5, the like-for-like pair. Timings need an
otherwise idle machine; the header and the last line print the load average.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import io
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from benchmarks import load_average
import yaml

from utils.data.datasets import LoadImagesAndLabels, create_dataloader
from utils.data.demo import DEMO_NAMES, ensure_demo_dataset

REPO = Path(__file__).resolve().parents[1]
HYP_FILE = REPO / "data" / "hyps" / "hyp.scratch.yolox.yaml"
IMG_HW = (480, 640)  # generated images: height, width
IMG_SIZE, STRIDE = 640, 32
NC = len(DEMO_NAMES)
# augmentation keys YOLOv5's LoadImagesAndLabels reads; both loaders get the same values
YOLOV5_HYP_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
                   "flipud", "fliplr", "mosaic", "mixup", "copy_paste")
TARGET = 1.5  # ours / YOLOv5 images per second, the goal
OURS, YOLOV5 = "ours", "YOLOv5"


@dataclass
class Verify:
    loader: str
    processes: int
    first_s: float
    cached_s: float


@dataclass
class Speed:
    loader: str
    mixup: str
    workers: int
    images: list = field(default_factory=list)   # images timed, per repeat
    seconds: list = field(default_factory=list)  # seconds, per repeat

    @property
    def img_s(self) -> float:
        return statistics.median(i / s for i, s in zip(self.images, self.seconds))


# ---- data -------------------------------------------------------------------------------------
def hyps(mixup_mode: str) -> dict:
    hyp = yaml.safe_load(HYP_FILE.read_text())
    return {**hyp, "mosaic": 1.0, "mixup": 1.0, "mixup_mode": mixup_mode}


def yolov5_hyp() -> dict:
    hyp = hyps("yolov5")
    return {k: hyp.get(k, 0.0) for k in YOLOV5_HYP_KEYS}  # copy_paste 0: no segments anyway


def yolov5_view(root: Path, view: Path) -> Path:
    """view/{images,labels}/train -> root's folders: the same files, but YOLOv5's labels/train.cache
    lands in view/labels, not beside ours. Returns YOLOv5's train path."""
    for kind in ("images", "labels"):
        (view / kind).mkdir(parents=True, exist_ok=True)
        link = view / kind / "train"
        if not link.exists():
            link.symlink_to(root / kind / "train", target_is_directory=True)
    return view / "images" / "train"


# ---- YOLOv5 -----------------------------------------------------------------------------------
def _stub(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, m)
    return m


def _missing(name: str) -> bool:
    try:
        return name not in sys.modules and importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def install_yolov5_stubs() -> list[str]:
    """Stand-ins for modules YOLOv5's dataloaders import at module level but never call on the
    detection loading path. Only missing modules are stubbed; returns their names."""
    from tests.reference import install_torchvision_stub

    def unavailable(*args, **kwargs):
        raise RuntimeError("stub module from benchmarks.bench_data: not available")

    stubbed = []
    install_torchvision_stub()  # torchvision cannot be imported beside this torch
    tv = sys.modules["torchvision"]
    if str(getattr(tv, "__version__", "")).endswith("stub"):
        for name in ("torchvision.transforms", "torchvision.transforms.functional", "torchvision.datasets"):
            if name not in sys.modules:
                _stub(name)
        T = sys.modules["torchvision.transforms"]
        for attr in ("Compose", "Normalize", "ToTensor", "Resize", "CenterCrop", "RandomResizedCrop"):
            setattr(T, attr, getattr(T, attr, unavailable))
        sys.modules["torchvision.transforms.functional"].normalize = unavailable
        # ClassificationDataset subclasses it at import time
        sys.modules["torchvision.datasets"].ImageFolder = type("ImageFolder", (), {"__init__": unavailable})
        stubbed.append("torchvision")
    if _missing("pandas"):
        _stub("pandas", options=types.SimpleNamespace(display=types.SimpleNamespace(max_columns=None)),
              read_csv=unavailable)
        stubbed.append("pandas")
    if _missing("pkg_resources"):
        from packaging.version import parse

        _stub("pkg_resources", parse_version=parse)
        stubbed.append("pkg_resources")
    if _missing("ultralytics"):
        _stub("ultralytics")
        _stub("ultralytics.utils")
        _stub("ultralytics.utils.checks", check_requirements=lambda *a, **k: True)
        stubbed.append("ultralytics")
    return stubbed


def yolov5_package_dir(path: str | None) -> Path:
    """The ``yolov5`` package folder: under --yolov5-path (a folder holding ``yolov5/`` or the
    package itself), else the installed package. Raises ImportError saying why not."""
    if path:
        for cand in (Path(path) / "yolov5", Path(path)):
            if (cand / "utils" / "dataloaders.py").is_file() and cand.name == "yolov5":
                return cand.resolve()
        raise ImportError(f"no yolov5/utils/dataloaders.py under --yolov5-path {path} "
                          "(expected the PyPI package layout, e.g. an extracted yolov5 wheel)")
    spec = importlib.util.find_spec("yolov5") if "yolov5" not in sys.modules else None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("package yolov5 not installed and no --yolov5-path given "
                          "(see the module docstring: pip download --no-deps yolov5, extract, --yolov5-path)")
    return Path(list(spec.submodule_search_locations)[0])


def import_yolov5(path: str | None, config_dir: Path):
    """(yolov5.utils.dataloaders, version, stubbed modules). Raises ImportError saying why not."""
    pkg_dir = yolov5_package_dir(path)
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", (pkg_dir / "__init__.py").read_text())
    version = match.group(1) if match else "?"
    saved = dict(env={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMEXPR_MAX_THREADS", "PIN_MEMORY",
                                                      "YOLOV5_CONFIG_DIR")},
                 np=np.get_printoptions(), cv2=(cv2.imread, cv2.imwrite, cv2.imshow))
    os.environ["PIN_MEMORY"] = "false"  # no accelerator here: pin_memory only warns
    os.environ["YOLOV5_CONFIG_DIR"] = str(config_dir)  # it makes a settings folder at import; not in $HOME
    try:
        stubbed = install_yolov5_stubs()
        pkg = types.ModuleType("yolov5")  # a bare package: its __init__ would import models and hub helpers
        pkg.__path__, pkg.__file__, pkg.__version__ = [str(pkg_dir)], str(pkg_dir / "__init__.py"), version
        sys.modules["yolov5"] = pkg
        dataloaders = importlib.import_module("yolov5.utils.dataloaders")
    except Exception as e:  # anything: YOLOv5 is optional
        for name in [m for m in sys.modules if m == "yolov5" or m.startswith("yolov5.")]:
            del sys.modules[name]
        raise ImportError(f"importing yolov5.utils.dataloaders from {pkg_dir} failed: {type(e).__name__}: {e}") from e
    finally:  # undo its import-time side effects on this process
        for k, v in saved["env"].items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        np.set_printoptions(**saved["np"])
        torch.set_printoptions(profile="default")
        cv2.imread, cv2.imwrite, cv2.imshow = saved["cv2"]
    import logging

    logging.getLogger("yolov5").setLevel(logging.WARNING)  # its per-dataset info lines
    return dataloaders, version, stubbed


# ---- measuring --------------------------------------------------------------------------------
def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def quiet(fn, *args, **kwargs):
    """fn(*args, **kwargs) with its stderr (the verifiers' progress bars) held back; shown when fn raises."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return fn(*args, **kwargs)
    except Exception:
        sys.stderr.write(err.getvalue())
        raise


def time_verification(loader: str, build, cache_file: Path, processes: int) -> Verify:
    """Dataset construction with no cache file, then with the one it wrote."""
    cache_file.unlink(missing_ok=True)
    _, first = timed(build)
    if not cache_file.is_file():
        raise RuntimeError(f"{loader}: no label cache written at {cache_file}")
    _, cached = timed(build)
    return Verify(loader, processes, first, cached)


def time_batches(loader, warmup: int, batches: int, new_epoch) -> tuple[int, float]:
    """(images, seconds) of ``batches`` batches after ``warmup`` untimed ones."""
    state = {"it": iter(loader), "epoch": 0}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:  # an epoch ended: start the next one as training does
            state["epoch"] += 1
            new_epoch(state["epoch"])
            state["it"] = iter(loader)
            return next(state["it"])

    for _ in range(warmup):
        next_batch()
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += len(next_batch()[0])
    return n, time.perf_counter() - t0


def run_ours(path: Path, mixup: str, workers: int, opt, cv2_threads: int) -> tuple[int, float]:
    cv2.setNumThreads(cv2_threads)  # as ours runs without YOLOv5 imported
    loader, dataset = create_dataloader(str(path), IMG_SIZE, opt.batch, STRIDE, hyp=hyps(mixup), augment=True,
                                        workers=workers, shuffle=True, nc=NC)

    def new_epoch(e):
        loader.sampler.set_epoch(e)
        dataset.set_epoch(e)

    return time_batches(loader, opt.warmup, opt.batches, new_epoch)


def run_yolov5(dataloaders, path: Path, workers: int, opt) -> tuple[int, float]:
    cv2.setNumThreads(0)  # as importing YOLOv5 sets it
    random.seed(0)
    np.random.seed(0)
    loader, dataset = quiet(dataloaders.create_dataloader, str(path), IMG_SIZE, opt.batch, STRIDE,
                            hyp=yolov5_hyp(), augment=True, workers=workers, shuffle=True, prefix="YOLOv5 train: ")
    return time_batches(loader, opt.warmup, opt.batches, lambda e: None)  # its InfiniteDataLoader runs on


# ---- reporting --------------------------------------------------------------------------------
def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    cells = [header] + rows
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def verify_table(results: list[Verify]) -> str:
    base = next((r for r in results if r.loader == YOLOV5), None)
    rows = [[r.loader, str(r.processes), f"{r.first_s:.2f}", f"{r.cached_s:.3f}", f"{r.first_s / r.cached_s:.0f}x",
             fmt(base.first_s / r.first_s if base and r is not base else None, ".2f"),
             fmt(base.cached_s / r.cached_s if base and r is not base else None, ".2f")] for r in results]
    return markdown(["dataset construction", "verify processes", "no cache s", "cache s", "no cache / cache",
                     "ratio no cache", "ratio cache"], rows)


def speed_ratio(r: Speed, speeds: list[Speed]) -> float | None:
    base = next((b for b in speeds if b.loader == YOLOV5 and b.workers == r.workers), None)
    return None if base is None or r is base else r.img_s / base.img_s


def speed_table(speeds: list[Speed], batch: int) -> str:
    rows = [[r.loader, r.mixup, str(r.workers), str(batch), str(sum(r.images)), f"{sum(r.seconds):.2f}",
             f"{r.img_s:.1f}", fmt(speed_ratio(r, speeds), ".2f")] for r in speeds]
    return markdown(["loader", "mixup", "workers", "batch", "images timed", "s", "img/s", "ratio"], rows)




# ---- main -------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=300, help="training images to generate (640x480 JPEGs)")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader workers to time")
    p.add_argument("--batches", type=int, default=20, help="timed batches per loader and setting")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches first (include the worker start)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved repeats per setting (median img/s)")
    p.add_argument("--root", type=Path, default=None,
                   help="dataset folder (default: a temporary one); reused when it holds the same demo data; kept")
    p.add_argument("--keep", action="store_true", help="keep the generated temporary dataset (its path is printed)")
    p.add_argument("--yolov5-path", default=None,
                   help="folder holding the PyPI yolov5 package (an extracted wheel); default: an installed yolov5")
    p.add_argument("--no-yolov5", action="store_true", help="skip YOLOv5 even where it is available")
    p.add_argument("--no-verify", action="store_true", help="skip the label verification timing")
    opt = p.parse_args(argv)
    if opt.images < 2 or opt.batch < 1 or opt.batches < 1 or opt.warmup < 0 or opt.repeats < 1:
        p.error("--images >= 2, --batch >= 1, --batches >= 1, --warmup >= 0 and --repeats >= 1 are required")
    if min(opt.workers) < 0:
        p.error("--workers must be >= 0")
    return opt


def main(argv=None) -> int:
    opt = parse_args(argv)
    cv2_threads = cv2.getNumThreads()
    scratch = Path(tempfile.mkdtemp(prefix="bench_data_"))
    root = opt.root or scratch / "demo"
    try:
        yolov5, v5_version, v5_note = None, None, ""
        if opt.no_yolov5:
            v5_note = "YOLOv5: not measured (--no-yolov5)"
        else:
            try:
                yolov5, v5_version, stubbed = import_yolov5(opt.yolov5_path, scratch / "yolov5_config")
                v5_note = (f"YOLOv5: yolov5 {v5_version} from {Path(yolov5.__file__).parents[2]}"
                           + (f", stubbed modules: {', '.join(stubbed)}" if stubbed else ""))
            except ImportError as e:
                v5_note = f"YOLOv5: NOT measured: {e}"
        print(f"torch {torch.__version__}, {os.cpu_count()} cpus, OpenCV {cv2.__version__} "
              f"({cv2_threads} threads for ours); images {opt.images} of {IMG_HW[1]}x{IMG_HW[0]}, img_size {IMG_SIZE}, "
              f"batch {opt.batch}, workers {opt.workers}, warmup {opt.warmup}, batches {opt.batches}, "
              f"repeats {opt.repeats}; {load_average()} before start", flush=True)
        print(v5_note, flush=True)

        (_, gen_s) = timed(ensure_demo_dataset, root, seed=0, n_train=opt.images, n_val=10, img_size=IMG_HW,
                           progress=False)
        print(f"dataset: {root} ({gen_s:.1f} s to generate or check)", flush=True)
        train = root / "images" / "train"
        v5_train = yolov5_view(root, scratch / "yolov5_view") if yolov5 else None

        verifies = []
        if not opt.no_verify:
            vw = max(opt.workers)
            ours_procs = min(vw, os.cpu_count() or 1)  # as utils.data.label_cache._verify decides
            ours_procs = ours_procs if ours_procs > 1 and opt.images >= 64 else 1
            verifies.append(time_verification(
                OURS, lambda: quiet(LoadImagesAndLabels, str(train), IMG_SIZE, opt.batch, augment=True,
                                    hyp=hyps("yolov5"), nc=NC, workers=vw),
                root / "labels" / "train.cache", ours_procs))
            if yolov5:
                verifies.append(time_verification(
                    YOLOV5, lambda: quiet(yolov5.LoadImagesAndLabels, str(v5_train), IMG_SIZE, opt.batch, augment=True,
                                          hyp=yolov5_hyp(), prefix="YOLOv5: ", workers=vw),
                    v5_train.parents[1] / "labels" / "train.cache", yolov5.NUM_THREADS if vw else 1))
            for v in verifies:
                print(f"  verify {v.loader}: {v.first_s:.2f} s without cache, {v.cached_s:.3f} s with", flush=True)

        speeds = []
        for w in opt.workers:
            runs = [(OURS, "yolov5"), (OURS, "yolox")] + ([(YOLOV5, "yolov5")] if yolov5 else [])
            group = {run: Speed(run[0], run[1], w) for run in runs}
            for rep in range(opt.repeats):
                for run in (runs if rep % 2 == 0 else runs[::-1]):  # interleaved against load drift
                    if run[0] == OURS:
                        n, s = run_ours(train, run[1], w, opt, cv2_threads)
                    else:
                        n, s = run_yolov5(yolov5, v5_train, w, opt)
                    gc.collect()  # the loader is gone: its workers stop before the next run starts
                    group[run].images.append(n)
                    group[run].seconds.append(s)
                    print(f"  {run[0]} mixup {run[1]} workers {w}: {n} images in {s:.2f} s, {n / s:.1f} img/s",
                          flush=True)
            speeds += group.values()
        cv2.setNumThreads(cv2_threads)

        print()
        if verifies:
            print(verify_table(verifies))
            print()
        print(speed_table(speeds, opt.batch))
        print(f"\nratio = YOLOv5 / ours seconds (verification), ours / YOLOv5 img/s (loader): > 1 means ours is "
              f"faster; mosaic 1.0 + mixup 1.0 at {IMG_SIZE}; {load_average()} at the end (this run included)")
        print(v5_note)
        if not yolov5:
            print(f"target ours >= {TARGET}x YOLOv5: not checked (YOLOv5 not measured)")
        for r in speeds:
            ratio = speed_ratio(r, speeds)
            if r.loader == OURS and r.mixup == "yolov5" and ratio is not None:
                print(f"target ours >= {TARGET}x YOLOv5 at workers {r.workers}: {ratio:.2f}x, "
                      f"{'met' if ratio >= TARGET else 'NOT met'}")
        return 0
    finally:
        shutil.rmtree(scratch / "yolov5_view", ignore_errors=True)
        shutil.rmtree(scratch / "yolov5_config", ignore_errors=True)
        if opt.keep and opt.root is None:
            print(f"kept the dataset: {root}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
