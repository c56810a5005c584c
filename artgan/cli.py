"""Turns user-facing errors into one clear paragraph and a non-zero exit, without a traceback."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

from artgan.errors import ArtGANError


def user_errors_exit(fn: Callable) -> Callable:
    """Wrap a Hydra task: an ArtGANError prints its message and exits (code 2 for config errors, else 1).
    HYDRA_FULL_ERROR=1 shows the full traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ArtGANError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"\nError: {err}\n", file=sys.stderr, flush=True)
            sys.exit(getattr(err, "exit_code", 1))

    return wrapper
