"""Device selection and the distributed (DDP) context from torch.distributed.run's environment."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = -1        # global rank, -1 when not distributed
    local_rank: int = -1
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank in (-1, 0)

    @property
    def distributed(self) -> bool:
        return self.rank != -1


def dist_context(local_rank_arg: int = -1) -> DistContext:
    """Ranks from torch.distributed.run (RANK, LOCAL_RANK, WORLD_SIZE) or launch's --local-rank.

    As in YOLOv5, a process started by a launcher (LOCAL_RANK set) trains under DDP even when it is the
    only one, so `--nproc_per_node 1` runs the same code path as a multi-GPU run."""
    local = int(os.environ.get("LOCAL_RANK", local_rank_arg))
    if local < 0:
        return DistContext()
    return DistContext(int(os.environ.get("RANK", local)), local, int(os.environ.get("WORLD_SIZE", 1)))


def select_device(device: str = "", ctx: DistContext | None = None) -> torch.device:
    """'cpu', '0', '0,1' or '' (CUDA when available). Under DDP each process takes cuda:LOCAL_RANK."""
    device = str(device).strip().lower().replace("cuda:", "")
    if device == "cpu" or (device == "" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device} asks for CUDA, but torch.cuda.is_available() is False; use --device cpu")
    ids = [int(x) for x in device.split(",")] if device else list(range(torch.cuda.device_count()))
    if any(i >= torch.cuda.device_count() for i in ids):
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if ctx is not None and ctx.distributed:
        return torch.device("cuda", ids[ctx.local_rank % len(ids)])
    return torch.device("cuda", ids[0])


def init_distributed(ctx: DistContext, device: torch.device) -> None:
    """NCCL on CUDA, gloo on CPU."""
    if ctx.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask (taskset, a container's cpuset) where the
    platform has one, else every core. os.cpu_count() counts the machine's, so two runs pinned to one
    core each would both start two threads and spin against each other."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: where bfloat16 convolutions run in hardware (oneDNN) instead of emulated."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype of training, None for float32. amp None (the default): float16 on CUDA (with a
    GradScaler), bfloat16 on a CPU that computes it natively (AMX or AVX512-BF16), else float32; True:
    bfloat16 on any CPU (emulated where not native: slow); False: float32 everywhere.

    Measured on the demo set (2 AMX cores, benchmarks/bench_train.py and train.py runs): bfloat16 makes
    yoloxs training steps 1.8x faster and learns as well as float32 (yoloxn, 15 epochs: mAP50-95 0.073
    vs 0.077; yoloxs, 8 epochs: 0.021 vs 0.012); the loss is computed in float32 either way."""
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and (amp or cpu_has_native_bf16()):
        return torch.bfloat16
    return None
