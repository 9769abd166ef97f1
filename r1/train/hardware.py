"""What this machine can do: device, thread count, mixed precision."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads not counted)."""
    available = len(os.sched_getaffinity(0))
    try:
        blocks = Path("/proc/cpuinfo").read_text().strip().split("\n\n")
    except OSError:
        return available
    pairs = set()
    for block in blocks:
        info = dict((k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in block.splitlines()))
        pairs.add((info.get("physical id"), info.get("core id", info.get("processor"))))
    return max(1, min(len(pairs) or available, available))


def set_threads(requested: int, local_world: int = 1) -> int:
    """Set torch's intra-op threads: `requested`, or physical cores shared among local processes."""
    n = requested or max(1, physical_cores() // max(1, local_world))
    torch.set_num_threads(n)
    return n


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`run.device` -> the device of this process: under torchrun each rank takes its own GPU,
    cuda:LOCAL_RANK (`distributed.env_local_rank()`)."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        avoid_cudnn_attention()
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def avoid_cudnn_attention() -> None:
    """Take cuDNN out of `scaled_dot_product_attention`'s backends (flash / memory-efficient / math
    remain). Measured on an H200 (torch 2.11, 2026-11-30): with a mask and sequence length 64 its
    bf16 backward gave R1-LM gradients 129% off the fp32 ones (math backend: 1.1%) and the
    shakespeare recipe ended at val loss 2.55 instead of 1.69; pytorch/pytorch#196678 describes
    the same kernel (seq_len % 128 == 64 with attn_mask on SM90)."""
    if torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("attention: cuDNN's SDPA backend off (wrong masked bf16 gradients on SM90; flash/efficient/math on)")


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype to use, or None; logs one line saying why AMP is on or off."""
    if requested == "off":
        log.info("AMP off (train.amp=off)")
        return None
    if device.type == "cuda":
        dtype = torch.bfloat16 if requested == "bf16" else torch.float16
        log.info("AMP on: %s autocast on CUDA", dtype)
        return dtype
    native = cpu_has_native_bf16()
    if native and requested == "bf16":
        log.info("AMP on: bf16 autocast on CPU (train.amp=bf16)")
        return torch.bfloat16
    if native:  # measured on an AVX-512 bf16 CPU (2026-11-28): bf16 autocast inflated a ResNet's gradient
        # norms 3-15x over fp32, produced non-finite gradients in a short run, no faster for small models
        log.info("AMP off: fp32 on CPU by default (train.amp=bf16 opts in; this CPU has native bf16)")
    else:
        log.info("AMP off: this CPU has no native bf16 (%s); bf16 matmul here is ~300x slower than fp32",
                 torch.backends.cpu.get_cpu_capability())
    return None


def memory_mb(device: torch.device) -> float:
    """Peak CUDA memory on GPU; resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return 0.0
