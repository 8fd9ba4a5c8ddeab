"""Where mosaic and mixup find their other images: images the loader has just decoded, reused.

YOLOv5 and official YOLOX draw a mosaic's three other images, and mixup's second image, uniformly
from the whole data set, so a mosaic sample decodes about four images and a mosaic blended with a
second mosaic about eight. Decoding is the largest single cost of a sample (about 1 ms for a
640x480 JPEG, against about 3.5 ms for everything else a mosaic sample does). ultralytics draws
them instead from a buffer of the images each worker loaded recently (up to 8 batches' worth, kept
decoded), which is most of why its loader is about 1.5x YOLOv5's.

The hyp ``partner_batches`` (N) chooses:

- N = 0 (the default): uniform over the data set, YOLOv5's and official YOLOX's draws: every
  partner is decoded anew.
- N >= 1: partners come from the images of the last N batches this loader process built, the
  current one included (``RecentImages`` keeps them decoded; at 640, 16 images take 15 MB). Each
  image is decoded once, as the first image of its own sample: mosaic samples cost about 40% less,
  mosaic + mixup about 55% less. With N = 1 only the batch's own images, so batches do not depend on
  the number of workers (with N > 1 each worker remembers its own batches, so they do).

Reuse is not the default because it cost accuracy where we could measure it: the demo main job
(batch 8, 24 epochs) ended at mAP50 0.539 on average over seeds 0, 1, 2 with N = 0, against 0.482
with N = 4 (each seed lower), 0.499 with N = 16, and 0.474 with N = 1 (seeds 0, 1). An image's
four appearances per epoch then fall within a few consecutive batches instead of across the epoch;
a longer memory spreads them and narrows the gap. ultralytics' buffer (8 batches) does the same;
whether it costs on large data sets is not measured here.

A pool smaller than MIN_POOL (the first batch, a tiny batch size, one sample read alone) gets
extra images drawn at random from the data set, decoded only if drawn.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np

MIN_POOL = 16  # fewest images partners are drawn from (when the data set has that many)


class RecentImages:
    """Decoded images of the last batches one process built: index -> load_image record, oldest first.

    Bound to the process that fills it: a loader worker forked from a process that had filled one
    starts empty, so workers never share or inherit decoded images."""

    def __init__(self):
        self.records: OrderedDict[int, tuple] = OrderedDict()
        self._pid = os.getpid()

    def current(self) -> OrderedDict:
        if os.getpid() != self._pid:
            self.records, self._pid = OrderedDict(), os.getpid()
        return self.records

    def forget(self) -> dict:
        """Drop what is kept (mosaic is off, or partners are not reused) -> {}, an empty pool history."""
        self.records.clear()
        return {}

    def keep(self, records: dict, capacity: int) -> None:
        """records (this batch's decoded images) become the most recent; the oldest beyond capacity go."""
        recent = self.current()
        for i, record in records.items():
            recent[i] = record
            recent.move_to_end(i)
        while len(recent) > capacity:
            recent.popitem(last=False)


class PartnerPool:
    """The images one batch draws mosaic and mixup partners from, with their decoded pixels.

    n_images: images in the data set; batch: the batch's data set indices; load(i) -> the loaded image
    record (the dataset's load_image); rng: draws the extras of a pool under MIN_POOL; recent: decoded
    records of earlier batches to draw from as well ({} for the batch alone), or None for uniform
    draws over the data set without caching (``partner_batches: 0``).
    """

    def __init__(self, n_images: int, batch: Sequence[int], load: Callable[[int], tuple],
                 rng: np.random.Generator, recent: dict | None = None):
        self.n, self._load, self.uniform = n_images, load, recent is None
        self.decoded: dict[int, tuple] = {}  # decoded for this batch (images reused from recent are not)
        self._recent = {} if recent is None else dict(recent)
        self.members = [] if self.uniform else self._members(batch, rng)

    def _members(self, batch, rng) -> list[int]:
        """The batch's images, then the recent ones, topped up at random to MIN_POOL; unique, in order."""
        members = list(dict.fromkeys([int(i) for i in batch] + list(self._recent)))
        taken = set(members)
        while len(members) < min(MIN_POOL, self.n):
            i = int(rng.integers(self.n))
            if i not in taken:
                taken.add(i)
                members.append(i)
        return members

    def draw(self, rng: np.random.Generator, k: int, exclude: int) -> list[int]:
        """k partner indices for the sample whose first image is ``exclude`` (never drawn while the pool
        has another image; duplicates among the k are allowed, as in YOLOv5)."""
        if self.uniform:
            return rng.integers(0, self.n, k).tolist()
        others = [i for i in self.members if i != exclude] or self.members or [exclude]
        return [others[j] for j in rng.integers(0, len(others), k).tolist()]

    def load(self, i: int) -> tuple:
        """load(i), decoded at most once per pool (uniform pools do not keep images). An image that
        fails to load leaves the pool, so later samples do not draw it again; the error goes on."""
        if self.uniform:
            return self._load(i)
        record = self.decoded.get(i) or self._recent.get(i)
        if record is None:
            try:
                record = self.decoded[i] = self._load(i)
            except Exception:
                self.members = [m for m in self.members if m != i]
                raise
        return record
