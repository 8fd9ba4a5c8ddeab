"""The training loop behind train.py: one class, one method per stage.

Learning rate per image: gradients are accumulated until a step has seen about ``nbs`` (the
nominal batch, hyp key, 64 by default) images, and each batch's loss (a mean over its foreground
anchors) is scaled by total batch / nbs, where total batch = batch per process x processes. A step
therefore applies lr0 to the mean gradient of nbs images at any batch size and any number of
processes; beyond nbs images per batch the scale grows linearly, as official YOLOX's
lr = 0.01 / 64 per image does.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from copy import deepcopy
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from models.weights import checkpoint_cfg, load_pretrained
from models.yolo import Model
from utils.checkpoints import read_checkpoint, save_checkpoint
from utils.config import load_hyp
from utils.data.dataset_yaml import has_split, load_data_config, split_source
from utils.data.datasets import create_dataloader
from utils.devices import amp_dtype, cpu_has_native_bf16, dist_context, init_distributed, select_device, usable_cores
from utils.eval.evaluator import EvalOptions, evaluate
from utils.eval.metrics import fitness
from utils.export.int8 import CALIB_PERCENTILE, calibration_images
from utils.export.options import DatasetImages
from utils.loss import build_loss
from utils.loss.distill import FINAL_WEIGHT, ChannelDistillation, distill_weight
from utils.quant.calibrate import QAT_RANGES, fix_percentile_ranges, hold_ranges
from utils.quant.fake_quant import SCHEMES
from utils.quant.prepare import prepare_qat
from utils.runs import increment_path
from utils.train.ema import ModelEMA, unwrap
from utils.train.memory_format import training_memory_format
from utils.train.optim import build_optimizer
from utils.train.schedule import LRSchedule, warmup
from utils.train.teacher import Teacher

LOGGER = logging.getLogger("yolox5.train")
MAX_BAD_STEPS = 10          # consecutive non-finite losses before the run stops
MULTISCALE_EVERY = 10       # iterations between input-size changes with --multi-scale
MULTISCALE_RANGE = (0.75, 1.25)  # official YOLOX: 480-800 at 640
METRIC_KEYS = ["metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95"]


def result_keys(train_items, val_items) -> list[str]:
    """results.csv's columns after the epoch: train losses (with distillation's, under --teacher),
    metrics, val losses, the groups' learning rates."""
    return ([f"train/{n}" for n in train_items] + METRIC_KEYS + [f"val/{n}" for n in val_items]
            + ["x/lr0", "x/lr1", "x/lr2"])


def prepare_save_dir(opt, ctx) -> str:
    """runs/train/<name>, numbered by rank 0 (exp, exp2, ...); under DDP every process uses rank 0's."""
    path = Path(opt.project) / opt.name
    save_dir = str(increment_path(path, opt.exist_ok)) if ctx.is_main else str(path)
    if not ctx.distributed:
        return save_dir
    init_distributed(ctx, select_device(opt.device, ctx))
    box = [save_dir]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Trainer:
    def __init__(self, opt):
        self.ctx = dist_context(opt.local_rank)
        self.device = select_device(opt.device, self.ctx)
        init_distributed(self.ctx, self.device)
        if self.device.type == "cuda":  # few input shapes (multi-scale: a handful), so autotuned convs pay off
            torch.backends.cudnn.benchmark = True
        self.resume_ckpt = self._resume_checkpoint(opt)
        if self.resume_ckpt is not None:
            opt = self._restore_options(opt, self.resume_ckpt)
        self.opt = opt
        self.main = self.ctx.is_main
        self.save_dir = Path(opt.save_dir)
        self.wdir = self.save_dir / "weights"
        if self.main:
            self.wdir.mkdir(parents=True, exist_ok=True)
        self.hyp = self.resume_ckpt["hyp"] if self.resume_ckpt else load_hyp(opt.hyp)
        if getattr(opt, "optimizer", None) and not self.resume_ckpt:
            self.hyp["optimizer"] = opt.optimizer  # --optimizer over the hyp file's choice
        torch.manual_seed(opt.seed + max(self.ctx.rank, 0))
        self.data = self._load_data()
        self.nc = 1 if opt.single_cls else self.data["nc"]
        self.names = ["item"] if opt.single_cls else self.data["names"]
        self._build_model()
        self._build_data()
        self._set_qat_ranges()
        self.ema = ModelEMA(self.model, decay=self.hyp["ema_decay"]) if self.main else None
        self._build_optimizer()
        self._restore_state()
        self._wrap_ddp()
        self.compute_loss = build_loss(self.model, self.hyp)  # the loss the model's head declares
        self.val_loss = build_loss(self.model, self.hyp)  # its own L1 switch and grid cache
        self.val_items = tuple(self.val_loss.item_names)
        self.loss_items = self.val_items + (("distill",) if self.distill is not None else ())

    # ---- set-up ---------------------------------------------------------------------------------
    @staticmethod
    def _resume_checkpoint(opt):
        if not opt.resume:
            return None
        path = Path(opt.resume) if isinstance(opt.resume, str) and opt.resume not in ("", "True") else _last_run(opt.project)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint found ({path or opt.project + '/*/weights/last.pt'})")
        ckpt = read_checkpoint(path)
        if "optimizer" not in ckpt or "opt" not in ckpt:
            raise ValueError(f"{path}: not a training checkpoint of this project (no optimizer state); use --weights")
        LOGGER.info(f"Resuming training from {path} (epoch {ckpt['epoch'] + 1} of {ckpt['opt']['epochs']})")
        return ckpt

    @staticmethod
    def _restore_options(opt, ckpt):
        """The interrupted run's options, except where this process runs (device, workers, rank)."""
        keep = {k: getattr(opt, k) for k in ("device", "workers", "local_rank")}
        restored = deepcopy(opt)
        for k, v in ckpt["opt"].items():
            setattr(restored, k, v)
        for k, v in keep.items():
            setattr(restored, k, v)
        restored.resume, restored.weights = True, ""
        return restored

    def _load_data(self):
        # rank 0 first: the demo set is generated on first use and the others must not race it
        if not self.main:
            dist.barrier()
        data = load_data_config(self.opt.data)
        if self.main and self.ctx.distributed:
            dist.barrier()
        return data

    def _build_model(self):
        opt = self.opt
        cfg = (self.resume_ckpt or {}).get("yaml") or opt.cfg or (checkpoint_cfg(opt.weights) if opt.weights else None)
        if not cfg:
            raise ValueError("--cfg is required (or --weights with a project checkpoint that holds its YAML)")
        self.model = Model(cfg, nc=self.nc).to(self.device)
        self.memory_format, why = training_memory_format(self.model, self.device)
        if why and self.main:
            LOGGER.info(why)
        self.model.names = self.names
        if opt.weights and not self.resume_ckpt:
            load_pretrained(self.model, opt.weights, LOGGER)
        if getattr(opt, "qat", False):
            self.model = self._quantisation_aware(self.model)
        self.model = self.model.to(memory_format=self.memory_format)
        self._build_distillation()
        self.stride = int(self.model.stride.max())
        if opt.imgsz % self.stride:
            raise ValueError(f"--img-size {opt.imgsz} must be a multiple of the largest stride {self.stride}")
        for i in _freeze_layers(opt.freeze, len(getattr(self.model, "model", []))):
            for p in self.model.model[i].parameters():
                p.requires_grad_(False)
        if opt.sync_bn and self.ctx.distributed and self.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        elif opt.sync_bn and self.main:  # SyncBatchNorm runs on CUDA only, and syncs nothing in one process
            LOGGER.warning("WARNING --sync-bn needs DDP on CUDA (torch.distributed.run with --device 0,1,...); "
                           "training with plain BatchNorm")

    def _quantisation_aware(self, model):
        """--qat: the model folded and fake-quantised as --qat-target's toolchains quantise (utils/quant)."""
        scheme = SCHEMES[self.opt.qat_target]
        example = torch.zeros(1, model.ch, self.opt.imgsz, self.opt.imgsz, device=self.device)
        qat = prepare_qat(model, scheme, example)
        if self.main:
            convs = sum(isinstance(m, torch.nn.Conv2d) for m in qat.modules())
            LOGGER.info(f"QAT ({scheme.name}: {scheme.toolchains}): BatchNorm folded, int8 weights per channel in "
                        f"{convs} convs, {len(qat.quantizers())} activation quantisers "
                        f"({'symmetric' if scheme.symmetric else 'asymmetric'} [{scheme.qmin}, {scheme.qmax}])")
        return qat

    def _set_qat_ranges(self):
        """--qat-ranges percentile: the activation ranges calibrated once on training images (those export
        calibrates PTQ on) and held while the weights train; on --resume they come from the checkpoint."""
        if not getattr(self.opt, "qat", False) or getattr(self.opt, "qat_ranges", QAT_RANGES[0]) != "percentile":
            return  # (train.py refuses --qat-ranges without --qat; a Trainer built from code gets the same)
        if self.resume_ckpt is None:
            images = calibration_images(self.data, DatasetImages.calibration, (self.opt.imgsz, self.opt.imgsz),
                                        purpose="QAT ranges")
            n = fix_percentile_ranges(self.model, images)
            if self.main:
                LOGGER.info(f"QAT ranges: {n} activation ranges at the {CALIB_PERCENTILE} percentile of "
                            f"{len(images)} training images, held while the weights train")
        hold_ranges(self.model)

    def _build_distillation(self):
        """--teacher: the frozen teacher and the align convs of DAMO's channel-wise distillation."""
        self.teacher = self.distill = None
        opt = self.opt
        if not getattr(opt, "teacher", None):
            return
        self.teacher = Teacher.load(opt.teacher, getattr(opt, "teacher_cfg", None), self.model, self.device,
                                    self.memory_format)
        self.distill = ChannelDistillation(self.model.neck_channels, self.teacher.channels).to(self.device)
        if self.main:
            LOGGER.info(self.teacher.describe())
            align = sum(p.numel() for p in self.distill.parameters())
            LOGGER.info(f"distillation: channel-wise (DAMO-YOLO's cwd) of the student's neck outputs "
                        f"{self.model.neck_channels} -> {self.teacher.channels} through {align:,} align-conv "
                        f"parameters, weight {self.hyp['distill_weight']:g} -> "
                        f"{self.hyp['distill_weight'] * FINAL_WEIGHT:g} by cosine over all iterations"
                        + (f", ramping in from 0 over {self.hyp['distill_ramp_epochs']:g} epochs"
                           if self.hyp["distill_ramp_epochs"] > 0 else ""))
            if self.hyp["distill_ramp_epochs"] >= opt.epochs:  # hyp.demo's 8-epoch ramp in a short run, say
                LOGGER.warning(f"WARNING distill_ramp_epochs {self.hyp['distill_ramp_epochs']:g} >= --epochs "
                               f"{opt.epochs}: the distillation weight never finishes ramping in; shorten the ramp")
            student = sum(p.numel() for p in self.model.parameters())
            if self.teacher.params <= student:
                LOGGER.warning(f"WARNING --teacher {opt.teacher} has {self.teacher.params:,} parameters, the student "
                               f"{student:,}: a teacher usually helps when it is the larger, better model")

    def _trainable(self) -> torch.nn.Module:
        """What the optimizer steps: the model, and the align convs under --teacher."""
        return self.model if self.distill is None else torch.nn.ModuleList([self.model, self.distill])

    def _cores(self) -> int:
        return max(usable_cores() // self.ctx.world_size, 1)

    def _loader_workers(self) -> int:
        """--workers, except on a CPU: there the network's forward and backward cost far more than
        loading (yoloxs at 640: ~2 s per batch of 16 on 12 threads, loading ~0.26 s on one worker), and
        every core a worker takes is a core the step loses. So a quarter of the cores load (none on 2
        cores, where loading in the main process took python train.py from 64 s to 41 s for 2 epochs)."""
        if self.device.type != "cpu":  # as YOLOv5: each process's share of the cores at most
            return min(self.opt.workers, self._cores())
        workers = min(self.opt.workers, self._cores() // 4)
        if workers != self.opt.workers and self.main:
            LOGGER.info(f"CPU training: {workers} loader workers (of --workers {self.opt.workers}) and "
                        f"{self._cores() - workers} torch threads, since the network, not loading, is the bottleneck")
        return workers

    def _build_data(self):
        opt, hyp = self.opt, self.hyp
        self.batch_total = opt.batch_size
        local_batch = opt.batch_size // self.ctx.world_size
        workers = self._loader_workers()
        self.train_loader, self.dataset = create_dataloader(
            imgsz=opt.imgsz, batch_size=local_batch, stride=self.stride, hyp=hyp, augment=True, cache=opt.cache,
            workers=workers, shuffle=True, seed=opt.seed, rank=self.ctx.rank, prefix="train: ", nc=self.data["nc"],
            single_cls=opt.single_cls, **split_source(self.data, "train"))
        self.nb = len(self.train_loader)
        self.total_steps = opt.epochs * self.nb  # the distillation weight's cosine spans them all
        if self.device.type == "cpu":  # leave cores to the loader workers: oversubscribed OpenMP threads spin
            torch.set_num_threads(max(self._cores() - self.train_loader.num_workers, 1))
        self.no_aug_epochs = min(int(hyp["no_aug_epochs"]), max(opt.epochs // 4, 1))
        if self.no_aug_epochs != hyp["no_aug_epochs"] and self.main:
            LOGGER.info(f"no_aug_epochs {hyp['no_aug_epochs']} capped to {self.no_aug_epochs} for a {opt.epochs}-epoch run")
        self.val_loader = None
        if self.main and has_split(self.data, "val"):
            self.val_loader, _ = create_dataloader(
                imgsz=opt.imgsz, batch_size=local_batch * 2, stride=self.stride, cache=opt.cache, rect=True,
                workers=workers, pad=0.5, prefix="val: ", nc=self.data["nc"], single_cls=opt.single_cls,
                **split_source(self.data, "val"))

    def _build_optimizer(self):
        hyp, opt = self.hyp, self.opt
        self.nbs = hyp["nbs"]
        self.accumulate = max(round(self.nbs / self.batch_total), 1)
        decay = hyp["weight_decay"] * self.batch_total * self.accumulate / self.nbs
        self.optimizer = build_optimizer(self._trainable(), hyp["lr0"], hyp["momentum"], decay, hyp["nesterov"],
                                         hyp.get("optimizer", "SGD"))
        kind = "cos" if opt.cos_lr and hyp["scheduler"] == "linear" else hyp["scheduler"]
        self.schedule = LRSchedule(kind, opt.epochs, hyp["lrf"], hyp["warmup_epochs"], self.no_aug_epochs)
        self.warmup_steps = max(round(hyp["warmup_epochs"] * self.nb), 100) if hyp["warmup_epochs"] > 0 else 0
        self.amp_dtype = amp_dtype(self.device, getattr(opt, "amp", None))
        # loss scaling only for float16: bfloat16 has float32's exponent range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if self.main:
            native = cpu_has_native_bf16() if self.device.type == "cpu" else False
            precision = {None: "float32",
                         torch.float16: "float16 autocast (--no-amp for float32)",
                         torch.bfloat16: "bfloat16 autocast" + (" (native on this CPU; --no-amp for float32)" if native
                                                                 else " (emulated on this CPU: slow)")}[self.amp_dtype]
            LOGGER.info(f"mixed precision: {precision}")
        self.start_epoch, self.best_fitness = 0, 0.0

    def _restore_state(self):
        ckpt = self.resume_ckpt
        if ckpt is None:
            return
        self.model.load_state_dict(ckpt["model"])
        if self.distill is not None:
            if "distill" not in ckpt:
                raise ValueError("--resume: the checkpoint has no distillation state, but its options name a --teacher")
            self.distill.load_state_dict(ckpt["distill"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.ema.load_state_dict(ckpt["ema"])
            self.ema.updates = int(ckpt.get("updates", 0))
        self.start_epoch, self.best_fitness = int(ckpt["epoch"]) + 1, float(ckpt.get("best_fitness", 0.0))
        if self.start_epoch >= self.opt.epochs:
            raise ValueError(f"this run already finished its {self.opt.epochs} epochs; nothing to resume")

    def _wrap_ddp(self):
        if self.ctx.distributed:
            if self.main:
                sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in self.model.modules())
                LOGGER.info(f"DDP: {dist.get_backend()} backend, world size {self.ctx.world_size}, "
                            f"{f'{sync} SyncBatchNorm layers' if sync else 'BatchNorm per process'}")
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids, output_device=ids[0] if ids else None)
            if self.distill is not None:  # its own gradients are averaged over the ranks too
                self.distill = torch.nn.parallel.DistributedDataParallel(self.distill, device_ids=ids,
                                                                         output_device=ids[0] if ids else None)

    # ---- the loop ------------------------------------------------------------------------------
    def train(self):
        opt = self.opt
        if self.main:
            self._write_run_files()
        # every epoch ends with an optimizer step, so a resumed run counts its accumulation from there
        self.last_opt_step, self.bad_steps, self.pending_grads = self.start_epoch * self.nb - 1, 0, False
        t0 = time.time()
        for epoch in range(self.start_epoch, opt.epochs):
            self._begin_epoch(epoch)
            train_items = self._train_epoch(epoch)
            if self.main:
                final = epoch + 1 == opt.epochs
                results = self._validate(final) if (not opt.noval or final) else self._no_results()
                self._log_epoch(epoch, train_items, results)
                stop = self._save(epoch, results, final)
            else:
                stop = False
            if self.ctx.distributed:
                flag = torch.tensor([int(stop)], device=self.device)
                dist.broadcast(flag, 0)
                stop = bool(flag.item())
            if stop:
                break
        if self.main:
            self._finish(time.time() - t0)
        if self.ctx.distributed:
            dist.destroy_process_group()
        return self.save_dir

    def _begin_epoch(self, epoch):
        self.dataset.set_epoch(epoch)
        if hasattr(self.train_loader.sampler, "set_epoch"):
            self.train_loader.sampler.set_epoch(epoch)
        if epoch >= self.opt.epochs - self.no_aug_epochs and self.dataset.mosaic_enabled:
            self.dataset.close_mosaic()
            self.compute_loss.use_l1 = self.val_loss.use_l1 = True
            if self.main:
                LOGGER.info(f"epoch {epoch}: mosaic and mixup off, L1 loss on (last {self.no_aug_epochs} epochs)")
        self.model.train()

    def _train_epoch(self, epoch):
        from tqdm import tqdm

        opt, nb = self.opt, self.nb
        mean_items = torch.zeros(len(self.loss_items), device=self.device)
        bar = enumerate(self.train_loader)
        if self.main:
            LOGGER.info(("%10s" * (4 + len(self.loss_items))) % ("Epoch", "GPU_mem", *self.loss_items, "Instances", "Size"))
            bar = tqdm(bar, total=nb, bar_format="{l_bar}{bar:10}{r_bar}")
        self.optimizer.zero_grad()
        t_epoch = time.perf_counter()
        for i, (images, targets, paths, _) in bar:
            ni = i + nb * epoch
            images = images.to(self.device, non_blocking=True).float()  # BGR 0-255, as official YOLOX
            images = images.contiguous(memory_format=self.memory_format)
            targets = targets.to(self.device)
            self._set_lr(ni, epoch + i / nb)
            if opt.multi_scale and ni % MULTISCALE_EVERY == 0:
                self.size = self._random_size(ni)
            if opt.multi_scale and getattr(self, "size", opt.imgsz) != images.shape[-1]:
                images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
            loss, items, distill = self.losses(images, targets)
            if distill is not None:
                distill = distill_weight(ni, self.total_steps, self.hyp["distill_weight"],
                                         round(self.hyp["distill_ramp_epochs"] * nb)) * distill
                loss, items = loss + distill, torch.cat((items, distill.detach().view(1)))
            if not self._finite(loss, epoch, i):
                continue
            self.scaler.scale(loss * self.batch_total / self.nbs).backward()
            self.pending_grads = True
            if ni - self.last_opt_step >= self._accumulate(ni):
                self._step()
                self.last_opt_step = ni
            if self.main:
                mean_items = (mean_items * i + items) / (i + 1)
                mem = f"{torch.cuda.memory_reserved(self.device) / 1e9:.3g}G" if self.device.type == "cuda" else "cpu"
                bar.set_description(("%10s" * 2 + "%10.4g" * (2 + len(self.loss_items))) % (
                    f"{epoch}/{opt.epochs - 1}", mem, *mean_items.tolist(), targets.shape[0], images.shape[-1]))
                if epoch == self.start_epoch and i < 3 and not opt.noplots:
                    from utils.plots import plot_images

                    plot_images(images.to(torch.uint8).cpu(), targets.cpu(), paths, self.save_dir / f"train_batch{i}.jpg", self.names)
        if self.pending_grads:  # no gradient crosses a checkpoint, so --resume continues exactly
            self._step()
            self.last_opt_step = ni
        self.lr = [g["lr"] for g in self.optimizer.param_groups]
        if self.teacher is not None and self.main:
            LOGGER.info(self.teacher.cost(time.perf_counter() - t_epoch, nb))
        return mean_items.tolist()

    def losses(self, images: torch.Tensor, targets: torch.Tensor):
        """One batch's forward: (task loss, its items, the unweighted distillation loss or None without
        --teacher). The training step weights and adds the distillation; benchmarks.distill_gradients
        compares the two losses' gradients on the same forward."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            if self.teacher is None:
                preds = self.model(images)
            else:
                preds, feats = self.model(images, neck=True)
                teacher_feats = self.teacher.features(images)
        loss, items = self.compute_loss(preds, targets)
        if self.teacher is None:
            return loss, items, None
        # in float32: softmax and KL over H x W cells
        return loss, items, self.distill([f.float() for f in feats], [f.float() for f in teacher_feats])

    def _accumulate(self, ni):
        if ni <= self.warmup_steps:
            return max(1, round(float(np.interp(ni, [0, self.warmup_steps], [1, self.nbs / self.batch_total]))))
        return self.accumulate

    def _set_lr(self, ni, epoch_float):
        hyp = self.hyp
        target = hyp["lr0"] * self.schedule.factor(epoch_float)
        for j, g in enumerate(self.optimizer.param_groups):
            start = hyp["warmup_bias_lr"] if j == 2 else 0.0
            g["lr"] = warmup(ni, self.warmup_steps, target, start, hyp["warmup_quadratic"])
            momentum = warmup(ni, self.warmup_steps, hyp["momentum"], hyp["warmup_momentum"])
            if "betas" in g:  # Adam, AdamW: momentum is beta1
                g["betas"] = (momentum, g["betas"][1])
            else:
                g["momentum"] = momentum

    def _random_size(self, ni):
        rng = np.random.default_rng([self.opt.seed, ni])  # same draw on every process
        lo, hi = (int(self.opt.imgsz * f) // self.stride for f in MULTISCALE_RANGE)
        return int(rng.integers(lo, hi + 1)) * self.stride

    def _finite(self, loss, epoch, i) -> bool:
        """False (and the step skipped) for a non-finite loss; too many in a row stop the run."""
        finite = torch.isfinite(loss.detach()).float()
        if self.ctx.distributed:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item():
            self.bad_steps = 0
            return True
        self.bad_steps += 1
        self.optimizer.zero_grad()  # the pending accumulation may hold the bad gradients too
        self.pending_grads = False
        if self.main:
            LOGGER.warning(f"WARNING non-finite loss at epoch {epoch} batch {i}: step skipped ({self.bad_steps} in a row)")
        if self.bad_steps >= MAX_BAD_STEPS:
            if self.main:
                self._save(epoch - 1, self._no_results(), False, force_last=True)
            raise RuntimeError(f"{MAX_BAD_STEPS} non-finite losses in a row: training stopped. Lower lr0, or "
                               f"check the data; {self.wdir / 'last.pt'} holds the last good epoch")
        return False

    def _step(self):
        if self.hyp["grad_clip"] > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._trainable().parameters(), max_norm=self.hyp["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        self.pending_grads = False
        if self.ema is not None:
            self.ema.update(self.model)

    # ---- validation, logs, checkpoints ---------------------------------------------------------
    def _no_results(self) -> tuple:
        """(P, R, mAP50, mAP50-95, val loss items) of an epoch without validation."""
        return (0.0,) * (len(METRIC_KEYS) + len(self.val_items))

    def _validate(self, final: bool):
        if self.val_loader is None:
            return self._no_results()
        opts = EvalOptions(single_cls=self.opt.single_cls, plots=final and not self.opt.noplots, verbose=final,
                           classwise=final)
        results, self.maps, _ = evaluate(self.ema.ema, self.val_loader, self.data, opts, save_dir=self.save_dir,
                                         compute_loss=self.val_loss)
        return tuple(float(x) for x in results)  # (P, R, mAP50, mAP50-95, val loss items)

    def _log_epoch(self, epoch, train_items, results):
        row = [epoch, *train_items, *results, *getattr(self, "lr", [0.0] * 3)]
        path = self.save_dir / "results.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", *result_keys(self.loss_items, self.val_items)])
            w.writerow([f"{x:.6g}" if isinstance(x, float) else x for x in row])
        if self.tb is not None:
            for k, v in zip(result_keys(self.loss_items, self.val_items), row[1:]):
                self.tb.add_scalar(k, v, epoch)

    def _save(self, epoch, results, final, force_last=False) -> bool:
        """last.pt every epoch, best.pt on a new best fitness; True when --patience says stop."""
        fit = float(fitness(results))
        if fit > self.best_fitness:
            self.best_fitness, self.best_epoch = fit, epoch
        if not self.opt.nosave or final or force_last:
            ckpt = {"epoch": epoch, "best_fitness": self.best_fitness, "model": unwrap(self.model).state_dict(),
                    "ema": self.ema.ema.state_dict(), "updates": self.ema.updates,
                    "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                    "hyp": self.hyp, "opt": _plain(vars(self.opt)), "yaml": unwrap(self.model).yaml,
                    "names": self.names, "date": datetime.now().isoformat(timespec="seconds")}
            if self.distill is not None:  # for --resume only: load_model and export read "ema" / "model"
                ckpt["distill"] = unwrap(self.distill).state_dict()
            if getattr(self.opt, "qat", False):  # the weights are the folded, fake-quantised model's
                ckpt["qat"] = {"target": self.opt.qat_target, "imgsz": self.opt.imgsz}
            save_checkpoint(self.wdir / "last.pt", ckpt)
            if fit == self.best_fitness:  # as YOLOv5: the first epoch too, so every run leaves a best.pt
                save_checkpoint(self.wdir / "best.pt", ckpt)
            if self.opt.save_period > 0 and (epoch + 1) % self.opt.save_period == 0:
                save_checkpoint(self.wdir / f"epoch{epoch}.pt", ckpt)
        patience = self.opt.patience
        if patience and epoch - getattr(self, "best_epoch", epoch) >= patience:
            LOGGER.info(f"Stopping early: no improvement in the last {patience} epochs (best at epoch {self.best_epoch})")
            return True
        return False

    def _write_run_files(self):
        (self.save_dir / "hyp.yaml").write_text(yaml.safe_dump(self.hyp, sort_keys=False))
        (self.save_dir / "opt.yaml").write_text(yaml.safe_dump(_plain(vars(self.opt)), sort_keys=False))
        self.tb = _tensorboard(self.save_dir)
        if not self.opt.noplots and self.resume_ckpt is None:
            from utils.plots import plot_labels

            plot_labels(self.dataset.labels, self.names, self.save_dir / "labels.jpg")

    def _finish(self, seconds):
        LOGGER.info(f"{self.opt.epochs - self.start_epoch} epochs completed in {seconds / 3600:.3f} hours.")
        if not self.opt.noplots and (self.save_dir / "results.csv").exists():
            from utils.plots import plot_results

            plot_results(self.save_dir / "results.csv")
        skipped = self.dataset.skipped
        if skipped:
            LOGGER.warning(f"WARNING {skipped} training samples failed to load and were replaced (see warnings above)")
        LOGGER.info(f"Results saved to {self.save_dir}")


def _freeze_layers(freeze, n_layers):
    """--freeze 10 freezes layers 0-9; --freeze 0 3 5 freezes those layers."""
    freeze = list(freeze or [])
    if len(freeze) == 1:
        return list(range(min(freeze[0], n_layers)))
    return [i for i in freeze if 0 <= i < n_layers]


def _last_run(project) -> Path | None:
    runs = sorted(Path(project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def _plain(d: dict) -> dict:
    """Options as YAML/weights-only friendly values."""
    return json.loads(json.dumps(d, default=str))


def _tensorboard(save_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: only when tensorboard is installed
        return None
    return SummaryWriter(str(save_dir))
