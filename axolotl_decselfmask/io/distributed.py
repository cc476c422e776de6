"""Helpers for runs with several processes."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every process of a distributed run (nothing in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
