"""Verify a dataset's images and labels once, in parallel, and cache the result beside the labels.

The cache is keyed by every file's path, size and modification time (and nc); a stale, corrupt
or foreign cache is rebuilt, never trusted. It is written as a plain .npz (no pickle), atomically.
"""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.data.verify import verify_sample

LOGGER = logging.getLogger("yolox5.data")
CACHE_VERSION = "yolox5-labels-v2"  # bump when verification rules change
STATUSES = ("found", "missing", "empty", "corrupt")


@dataclass
class VerifiedSet:
    files: list[str]             # usable images (corrupt ones dropped)
    shapes: np.ndarray           # [N, 2] (height, width)
    labels: list[np.ndarray]     # [n_i, 5] (cls, cx, cy, w, h) normalised
    counts: dict                 # found / missing / empty / corrupt
    messages: list[str]
    from_cache: bool = False


def signature(paths: list[str], nc: int) -> str:
    """Hash of every path with its size and mtime (or its absence)."""
    h = hashlib.sha256(f"{CACHE_VERSION}|{nc}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|absent\n".encode())
    return h.hexdigest()


def verify_dataset(images: list[str], label_files: list[str] | None, rows: list | None, nc: int | None,
                   cache_path: Path | None, prefix: str = "", workers: int = 8, extra_key: str = "") -> VerifiedSet:
    """Checked labels of ``images``: from the cache when it is current, else verified in parallel.

    Labels come from ``label_files`` (YOLO txt, one per image) or ``rows`` (COCO json, per image).
    nc None: class ids are not range-checked, and the summary names the largest one seen.
    """
    if not images:
        raise ValueError(f"{prefix}no images found")
    keyed = list(images) + (list(label_files) if label_files else []) + ([extra_key] if extra_key else [])
    sig = signature(keyed, nc)
    cached = _load(cache_path, sig) if cache_path else None
    if cached is not None:
        result = cached
    else:
        result = _verify(images, label_files, rows, nc, prefix, workers)
        if cache_path:
            _save(cache_path, result, sig)
    _report(result, prefix, cache_path, nc)
    if not result.files:
        raise ValueError(f"{prefix}every one of {len(images)} images is unusable (see the warnings above)")
    return result


def _verify(images, label_files, rows, nc, prefix, workers) -> VerifiedSet:
    from tqdm import tqdm

    n = len(images)
    args = (images, label_files or [None] * n, rows or [None] * n, [nc] * n)
    workers = max(0, min(workers, os.cpu_count() or 1))
    desc = f"{prefix}verifying {n} images"
    if workers > 1 and n >= 64:
        with ProcessPoolExecutor(workers) as pool:
            checks = list(tqdm(pool.map(verify_sample, *args, chunksize=32), total=n, desc=desc, leave=False))
    else:
        checks = [verify_sample(*a) for a in tqdm(zip(*args), total=n, desc=desc, leave=False)]
    counts = {s: 0 for s in STATUSES}
    for c in checks:
        counts[c.status] += 1
    kept = [c for c in checks if c.status != "corrupt"]
    return VerifiedSet([c.image for c in kept], np.array([c.shape for c in kept], dtype=np.int64).reshape(-1, 2),
                       [c.labels for c in kept], counts, [m for c in checks for m in c.messages])


def _report(result: VerifiedSet, prefix: str, cache_path, nc) -> None:
    for m in result.messages:
        LOGGER.warning(f"{prefix}WARNING {m}")
    c = result.counts
    source = f" (cache {cache_path})" if result.from_cache else ""
    classes = ""
    if nc is None:  # unchecked: say what the labels hold
        ids = [int(lb[:, 0].max()) for lb in result.labels if len(lb)]
        classes = f"; class ids not checked (no nc), largest {max(ids)}" if ids else "; no labelled boxes"
    LOGGER.info(f"{prefix}{sum(c.values())} images: {c['found']} with labels, {c['missing']} background "
                f"(no label file), {c['empty']} empty, {c['corrupt']} corrupt and skipped{source}{classes}")


def _load(path: Path, sig: str) -> VerifiedSet | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["version"]) != CACHE_VERSION or str(z["signature"]) != sig:
                LOGGER.info(f"{path}: cache out of date, verifying again")
                return None
            counts = dict(zip(STATUSES, z["counts"].tolist()))
            offsets = np.cumsum(np.r_[0, z["label_counts"]])
            rows = z["labels"]  # read once: each z[...] access decompresses the whole array again
            labels = [rows[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
            return VerifiedSet(z["files"].tolist(), z["shapes"], labels, counts, z["messages"].tolist(), True)
    except Exception as e:  # truncated or foreign file: never trusted
        LOGGER.warning(f"{path}: unreadable cache ({type(e).__name__}), verifying again")
        return None


def _save(path: Path, result: VerifiedSet, sig: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, version=np.array(CACHE_VERSION), signature=np.array(sig),
                     files=np.array(result.files, dtype=str), shapes=result.shapes,
                     label_counts=np.array([len(x) for x in result.labels], dtype=np.int64),
                     labels=np.concatenate(result.labels) if result.labels else np.zeros((0, 5), np.float32),
                     counts=np.array([result.counts[s] for s in STATUSES], dtype=np.int64),
                     messages=np.array(result.messages, dtype=str))
        os.replace(tmp, path)
    except OSError as e:  # a read-only dataset still trains, it just verifies every time
        LOGGER.warning(f"{path}: cache not written ({e})")
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:  # no folder to write in: nothing was written either
            pass
