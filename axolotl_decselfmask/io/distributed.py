"""Helpers for runs with several processes."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("RANK", "0")) == 0
