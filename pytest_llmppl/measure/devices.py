"""``--ppl-device=auto``: one GPU per pytest-xdist worker, else cuda:0, else CPU.

Pure logic (no torch): the plugin passes in the worker id and the visible GPUs, and pins
a worker by narrowing ``CUDA_VISIBLE_DEVICES`` before anything initialises CUDA, so that
the worker's own model loading (``device_map="cuda"``, ``.cuda()``) lands on its GPU too.
"""

from __future__ import annotations

import os
import re


def worker_index(worker_id: str | None) -> int | None:
    """``gw3`` -> 3; None outside xdist."""
    if not worker_id:
        return None
    m = re.fullmatch(r"gw(\d+)", worker_id)
    return int(m.group(1)) if m else None


def pick_device(worker_id: str | None, visible: list[str]) -> tuple[str, str | None]:
    """(device for evaluation, CUDA_VISIBLE_DEVICES to set or None).

    Worker k of xdist gets GPU ``visible[k % len(visible)]`` (seen by it as cuda:0);
    without xdist, cuda:0; without GPUs, cpu.
    """
    if not visible:
        return "cpu", None
    idx = worker_index(worker_id)
    if idx is None:
        return "cuda:0", None
    return "cuda:0", visible[idx % len(visible)]


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else all that torch counts."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch  # only reached with --ppl-device=auto; device_count() does not initialise CUDA
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]
