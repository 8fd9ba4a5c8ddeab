"""Datasets and loaders: YOLO-txt or COCO-json labels, verified and cached, YOLOX/YOLOv5 augmentations.

    loader, dataset = create_dataloader(path, imgsz, batch_size, stride, hyp=None, augment=False, ...)

Batches are ``(images uint8 [B, 3, H, W], targets [M, 6], paths, shapes)``: images in BGR order,
0-255 (official YOLOX weights expect exactly that: no RGB swap, no normalisation); targets rows
(image index, class, cx, cy, w, h) normalised to the batch's input size.
"""
from __future__ import annotations

import logging
import math
import os
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, distributed

from utils.config import with_defaults
from utils.data import augment
from utils.data.augment import LETTERBOX_MODES
from utils.data.coco import CocoLabels
from utils.data.image_io import imread
from utils.data.label_cache import verify_dataset
from utils.data.partner_pool import PartnerPool, RecentImages
from utils.data.verify import IMG_FORMATS

LOGGER = logging.getLogger("yolox5.data")
MAX_RETRIES = 10  # a failing image is replaced by another one this many times before giving up


def img2label_paths(img_paths: list[str]) -> list[str]:
    """YOLO layout: .../images/x.jpg -> .../labels/x.txt (the last 'images' folder of the path)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return [sb.join(p.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt" for p in img_paths]


def list_images(spec) -> list[str]:
    """Image files of a split: a folder (recursive), a .txt list (paths relative to it), a file, or a list."""
    if isinstance(spec, (list, tuple)):
        return sorted({f for s in spec for f in list_images(s)})
    p = Path(spec)
    if p.is_dir():
        files = [str(f) for f in p.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS]
    elif p.is_file() and p.suffix == ".txt":
        lines = [x.strip() for x in p.read_text().splitlines() if x.strip()]
        files = [str((p.parent / x).resolve()) if not Path(x).is_absolute() else x for x in lines]
        files = [f for f in files if f.rsplit(".", 1)[-1].lower() in IMG_FORMATS]
    elif p.is_file():
        files = [str(p)]
    else:
        raise FileNotFoundError(f"image source not found: {p}")
    if not files:
        raise FileNotFoundError(f"no images in {p} (formats: {', '.join(IMG_FORMATS)})")
    return sorted(files)


class LoadImagesAndLabels(Dataset):
    """Images with verified labels; augmentation per hyp when ``augment``; letterboxed otherwise.

    nc: rows with a class id outside [0, nc) are dropped and named; None (as YOLOv5's loader) checks no range.
    """

    def __init__(self, path=None, img_size=640, batch_size=16, augment=False, hyp=None, rect=False,
                 cache=None, stride=32, pad=0.0, prefix="", nc=None, json=None, images_dir=None,
                 letterbox_mode="center", seed=0, workers=8, single_cls=False):
        if letterbox_mode not in LETTERBOX_MODES:
            raise ValueError(f"letterbox_mode must be one of {LETTERBOX_MODES}, got {letterbox_mode!r}")
        self.img_size, self.stride, self.augment, self.prefix = img_size, stride, augment, prefix
        self.batch_size = batch_size
        self._recent = RecentImages()  # decoded images of this process's last batches: mosaic partners
        self.hyp = with_defaults(hyp)  # augmentation keys left out take utils/config.py's defaults
        n_batches = self.hyp["partner_batches"]
        if n_batches < 0 or n_batches != int(n_batches):
            raise ValueError(f"hyp partner_batches must be a whole number >= 0, got {n_batches!r}")
        self.letterbox_mode, self.seed = letterbox_mode, seed
        self.rect = rect and not augment  # mosaic needs square inputs

        if json is not None:  # COCO json source
            coco = CocoLabels(json, images_dir or Path(json).parent)
            images, label_files, rows = coco.files, None, coco.boxes
            cache_path, self.coco = Path(json).with_suffix(".cache"), coco
        else:
            images = list_images(path)
            label_files, rows, self.coco = img2label_paths(images), None, None
            cache_path = Path(label_files[0]).parent.with_suffix(".cache")
        checked = verify_dataset(images, label_files, rows, nc, cache_path, prefix, workers,
                                 extra_key=str(json) if json else "")
        self.im_files, self.labels = checked.files, checked.labels
        if single_cls:  # one class for everything (--single-cls), after checking against the real nc
            self.labels = [np.concatenate((np.zeros_like(x[:, :1]), x[:, 1:]), 1) for x in self.labels]
        self.shapes = checked.shapes  # [N, 2] (h, w)
        self.counts = checked.counts
        n = len(self.im_files)
        self.indices = np.arange(n)
        self.batch = np.floor(np.arange(n) / batch_size).astype(int)
        if self.rect:
            self._set_rect_shapes(batch_size, pad)
        # shared with loader workers, also persistent ones: epoch, mosaic switch, samples skipped
        self._state = torch.tensor([0, 1, 0], dtype=torch.int64).share_memory_()
        self.ims = [None] * n
        self.cache = cache
        if cache:
            self._cache_images(cache)

    # ---- state shared with workers ------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self._state[0] = epoch

    def close_mosaic(self) -> None:
        """Turn mosaic and mixup off (the last no_aug_epochs), also in running workers."""
        self._state[1] = 0

    @property
    def mosaic_enabled(self) -> bool:
        return bool(self._state[1])

    @property
    def skipped(self) -> int:
        """Samples that failed to load during training and were replaced by others."""
        return int(self._state[2])

    def __len__(self):
        return len(self.im_files)

    # ---- loading ------------------------------------------------------------------------------
    def load_image(self, i: int):
        """(image BGR resized so its long side is img_size, (h0, w0), (h, w))."""
        im = self.ims[i]
        if im is not None:
            h0, w0 = self.shapes[i]
            return im, (int(h0), int(w0)), im.shape[:2]
        f = self.im_files[i]
        npy = Path(f).with_suffix(".npy")
        im = np.load(npy) if self.cache == "disk" and npy.is_file() else None
        if im is None:
            im = imread(f)  # as cv2.imread: BGR, EXIF orientation applied, 16-bit and alpha handled
            if im is None:
                raise OSError(f"image cannot be decoded: {f}")
            im = self._resize(im)
        h0, w0 = self.shapes[i]
        return im, (int(h0), int(w0)), im.shape[:2]

    def _resized_hw(self, h0: int, w0: int) -> tuple[int, int]:
        """(h, w) of an h0 x w0 image resized so its long side is img_size."""
        r = self.img_size / max(h0, w0)
        if r == 1:
            return h0, w0
        # official YOLOX's preprocessing truncates (int), YOLOv5's rounds up
        if self.letterbox_mode == "topleft":
            return int(h0 * r), int(w0 * r)
        return math.ceil(h0 * r), math.ceil(w0 * r)

    def loaded_hw(self, i: int) -> tuple[int, int]:
        """(h, w) load_image(i) will return, known without decoding the image."""
        im = self.ims[i]
        return im.shape[:2] if im is not None else self._resized_hw(*(int(v) for v in self.shapes[i]))

    def _resize(self, im):
        h0, w0 = im.shape[:2]
        h, w = self._resized_hw(h0, w0)
        if (h, w) == (h0, w0):
            return im
        r = self.img_size / max(h0, w0)
        interp = cv2.INTER_LINEAR if (self.augment or r > 1 or self.letterbox_mode == "topleft") else cv2.INTER_AREA
        return cv2.resize(im, (w, h), interpolation=interp)

    def _cache_images(self, cache: str) -> None:
        if cache not in ("ram", "disk"):
            raise ValueError(f"cache must be 'ram' or 'disk', got {cache!r}")
        from tqdm import tqdm

        def load(i):
            im = self.load_image(i)[0]
            if cache == "disk":
                np.save(Path(self.im_files[i]).with_suffix(".npy"), im)
                return i, None
            return i, im

        with ThreadPool(min(8, os.cpu_count() or 1)) as pool:
            for i, im in tqdm(pool.imap(load, range(len(self))), total=len(self), desc=f"{self.prefix}caching images ({cache})", leave=False):
                self.ims[i] = im

    def _set_rect_shapes(self, batch_size: int, pad: float) -> None:
        """YOLOv5's rectangular batches: images sorted by aspect ratio, one padded shape per batch."""
        ar = self.shapes[:, 0] / self.shapes[:, 1]  # h / w
        order = ar.argsort()
        self.im_files = [self.im_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes, ar = self.shapes[order], ar[order]
        nb = self.batch[-1] + 1
        shapes = np.ones((nb, 2))
        for b in range(nb):
            ari = ar[self.batch == b]
            if ari.max() < 1:
                shapes[b] = [ari.max(), 1]
            elif ari.min() > 1:
                shapes[b] = [1, 1 / ari.min()]
        self.batch_shapes = (np.ceil(shapes * self.img_size / self.stride + pad).astype(int) * self.stride)

    # ---- samples ------------------------------------------------------------------------------
    def __getitem__(self, index):
        """One sample, read alone: a batch of one (see ``utils.data.partner_pool`` for its partners)."""
        return self.__getitems__([index])[0]

    def __getitems__(self, indices):
        """The samples of one batch (torch's DataLoader calls this with a batch's indices): mosaic and
        mixup draw their other images from this batch and the last ones (``utils.data.partner_pool``)."""
        indices = [int(self.indices[i]) for i in indices]
        epoch = int(self._state[0])
        n_batches = int(self.hyp["partner_batches"])
        mosaics = self.augment and self.mosaic_enabled and self.hyp["mosaic"] > 0
        remember = mosaics and n_batches > 1  # partners from this process's last batches as well
        recent = self._recent.current() if remember else self._recent.forget()
        pool = PartnerPool(len(self), indices, self.load_image,
                           np.random.default_rng([self.seed, epoch, len(indices), *indices]),
                           recent=recent if mosaics and n_batches > 0 else None)  # None: no partners kept
        samples, images = [], None
        for k, index in enumerate(indices):
            img, *rest = self._sample_or_replace(index, epoch, pool)
            if images is None:  # every sample of a batch has the batch's shape (collate needs it too)
                # one tensor for the batch: collate_fn hands it on without stacking a copy. (Made in
                # shared memory instead, as torch's default_collate does, it measured slower here.)
                images = torch.empty((len(indices), img.shape[2], *img.shape[:2]), dtype=torch.uint8)
            samples.append((hwc_to_chw(img, out=images[k]), *rest))
        if remember:
            self._recent.keep(pool.decoded, capacity=n_batches * max(self.batch_size, len(indices)))
        return samples

    def _sample_or_replace(self, index, epoch, pool):
        rng = np.random.default_rng([self.seed, epoch, index])
        for attempt in range(MAX_RETRIES):
            try:
                return self._sample(index, rng, pool)
            except (OSError, cv2.error, ValueError) as e:
                self._state[2] += 1
                LOGGER.warning(f"{self.prefix}WARNING {e}; using another image instead")
                index = int(rng.integers(len(self)))
        raise RuntimeError(f"{self.prefix}{MAX_RETRIES} images in a row failed to load; see the warnings")

    def _sample(self, index, rng, pool):
        hyp = self.hyp
        if self.augment and self.mosaic_enabled and rng.random() < hyp["mosaic"]:
            img, labels = self._mosaic(index, rng, pool)
            shapes = None
            if rng.random() < hyp["mixup"]:
                img, labels = self._mixup(img, labels, index, rng, pool)
        else:
            img, (h0, w0), (h, w) = pool.load(index)
            shape = tuple(self.batch_shapes[self.batch[index]]) if self.rect else self.img_size
            img, ratio, pad = augment.letterbox(img, shape, mode=self.letterbox_mode, auto=False, scaleup=self.augment)
            shapes = (h0, w0), ((h / h0 * ratio[1], w / w0 * ratio[0]), pad)
            labels = self._pixel_labels(index, w, h, ratio, pad)
            if self.augment:
                img, labels = augment.random_perspective(img, labels, rng, degrees=hyp["degrees"], translate=hyp["translate"],
                                                         scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"])
        if self.augment:
            augment.augment_hsv(img, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"], rng)
            if rng.random() < hyp["flipud"]:
                img, labels = augment.flip_ud(img, labels)
            if rng.random() < hyp["fliplr"]:
                img, labels = augment.flip_lr(img, labels)
        labels = augment.filter_boxes(labels, min_side=1.0)
        h, w = img.shape[:2]
        out = np.zeros((len(labels), 6), dtype=np.float32)
        out[:, 1:] = augment.xyxy_to_cxcywh_norm(labels, w, h)
        return img, torch.from_numpy(out), self.im_files[index], shapes

    def _pixel_labels(self, index, w, h, ratio=(1.0, 1.0), pad=(0.0, 0.0)):
        """[n, 5] (cls, x1, y1, x2, y2) in pixels of the resized (and letterboxed) image."""
        labels = augment.cxcywh_norm_to_xyxy(self.labels[index], w, h)
        labels[:, [1, 3]] = labels[:, [1, 3]] * ratio[0] + pad[0]
        labels[:, [2, 4]] = labels[:, [2, 4]] * ratio[1] + pad[1]
        return labels

    def _mosaic(self, index, rng, pool):
        """Mosaic + random_perspective crop, assembling only the window the crop shows (images that do
        not show in it are not even decoded): ``augment.mosaic4_warped``."""
        indices = [index] + pool.draw(rng, 3, exclude=index)
        sizes = [self.loaded_hw(i) for i in indices]
        labels = [self._pixel_labels(i, w, h) for i, (h, w) in zip(indices, sizes)]
        hyp = self.hyp
        return augment.mosaic4_warped(lambda k: pool.load(indices[k])[0], sizes, labels, self.img_size, rng,
                                      degrees=hyp["degrees"], translate=hyp["translate"], scale=hyp["scale"],
                                      shear=hyp["shear"], perspective=hyp["perspective"])

    def _mixup(self, img, labels, index, rng, pool):
        j = pool.draw(rng, 1, exclude=index)[0]
        if self.hyp["mixup_mode"] == "yolov5":  # blend with a second mosaic
            img2, labels2 = self._mosaic(j, rng, pool)
            return augment.mixup_yolov5(img, labels, img2, labels2, rng)
        img2, _, (h, w) = pool.load(j)  # official YOLOX: paste a scale-jittered image
        return augment.mixup_yolox(img, labels, img2, self._pixel_labels(j, w, h), rng,
                                   scale=tuple(self.hyp["mixup_scale"]), ratio=self.hyp["mixup_ratio"])

    @staticmethod
    def collate_fn(batch):
        images, labels, paths, shapes = zip(*batch)
        for i, lb in enumerate(labels):
            lb[:, 0] = i  # image index within the batch
        return stack_images(images), torch.cat(labels, 0), paths, shapes


def stack_images(images) -> torch.Tensor:
    """[B, C, H, W] from B [C, H, W] images: the tensor they are the rows of, when they are exactly the
    rows of one (as ``__getitems__`` writes a batch), else a stacked copy."""
    base = images[0]._base
    if (base is not None and base.dim() == 4 and len(base) == len(images)
            and all(im.shape == base.shape[1:] and im.data_ptr() == base[k].data_ptr() for k, im in enumerate(images))):
        return base
    return torch.stack(images, 0)


def hwc_to_chw(img: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
    """HxWxC array -> contiguous CxHxW tensor (written into out when given). cv2.split writing into the
    tensor's planes is 4x faster than numpy's strided transpose copy."""
    chw = torch.empty((img.shape[2], *img.shape[:2]), dtype=torch.uint8) if out is None else out
    if tuple(chw.shape) != (img.shape[2], *img.shape[:2]):
        raise ValueError(f"an image of shape {img.shape[:2]} in a batch of {tuple(chw.shape[1:])} images")
    cv2.split(np.ascontiguousarray(img), list(chw.numpy()))
    return chw


class SeededSampler(Sampler):
    """Indices in an order fixed by (seed, epoch): reproducible, and resumable mid-run."""

    def __init__(self, n: int, shuffle: bool, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 10007 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


def create_dataloader(path, imgsz, batch_size, stride, hyp=None, augment=False, cache=None, rect=False,
                      workers=8, shuffle=False, seed=0, rank=-1, prefix="", nc=None, json=None,
                      images_dir=None, letterbox_mode="center", pad=0.0, single_cls=False):
    """(loader, dataset) as YOLOv5's create_dataloader; see the module docstring for the batches."""
    if rect and shuffle:
        LOGGER.warning(f"{prefix}--rect is incompatible with shuffle, shuffle turned off")
        shuffle = False
    dataset = LoadImagesAndLabels(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect, cache=cache,
                                  stride=int(stride), pad=pad, prefix=prefix, nc=nc, json=json,
                                  images_dir=images_dir, letterbox_mode=letterbox_mode, seed=seed, workers=workers,
                                  single_cls=single_cls)
    batch_size = min(batch_size, len(dataset))
    nw = min(os.cpu_count() or 1, batch_size if batch_size > 1 else 0, workers)
    sampler = (distributed.DistributedSampler(dataset, shuffle=shuffle, seed=seed) if rank != -1
               else SeededSampler(len(dataset), shuffle, seed))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=nw,
                        pin_memory=torch.cuda.is_available(), collate_fn=LoadImagesAndLabels.collate_fn,
                        persistent_workers=nw > 0, worker_init_fn=_seed_worker,
                        generator=torch.Generator().manual_seed(seed))
    return loader, dataset


def _seed_worker(worker_id):
    """Only libraries that keep global random state need this: samples draw from their own rng."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    cv2.setRNGSeed(int(seed % 2**31))
    cv2.setNumThreads(0)  # OpenCV threads inside loader workers only oversubscribe the cores
