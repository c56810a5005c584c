"""Turns user-facing errors into one clear paragraph and a non-zero exit, without a traceback."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from artgan.errors import ArtGANError, ConfigError


def find_user_error(err: BaseException | None) -> ArtGANError | None:
    """The ArtGANError behind ``err``, if any: Hydra's instantiate wraps errors raised in constructors."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ArtGANError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


#: whether Hydra has handed a composed config to the task (set by user_errors_exit)
_task_started = False


def user_errors_exit(fn: Callable) -> Callable:
    """Wrap a Hydra task: an ArtGANError prints its message and exits (code 2 for config errors, else 1); after a
    config error the run dir is left as it was (artgan.outputs.undo_run_dir). HYDRA_FULL_ERROR=1 shows the
    traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _task_started
        _task_started = True
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            user_error = find_user_error(err)
            if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            exit_for(user_error)

    return wrapper


def run_hydra_main(main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` entry point. Hydra reports the errors it meets before the task starts (an override
    key or a config group option that does not exist, bad override syntax) in its own words and exits 1; they are
    bad input like any other bad setting, so the exit code becomes 2."""
    try:
        main()
    except SystemExit as err:
        if err.code == 1 and not _task_started:
            sys.exit(2)
        raise


def exit_for(user_error: ArtGANError) -> NoReturn:
    """Print the paragraph and exit with the error's code (2 for config errors, else 1)."""
    print(f"\nError: {user_error}\n", file=sys.stderr, flush=True)
    code = getattr(user_error, "exit_code", 1)
    if code == 2:  # a bad setting: the run made nothing, so leave its run dir as it was
        from artgan.outputs import undo_run_dir

        undo_run_dir()
    sys.exit(code)


# Command-line selections that need a Hydra plugin from an optional extra: (override prefix, module, package, extra).
# Hydra looks plugins up while composing the config, before any of our code runs, and says only "Could not find
# 'hydra/sweeper/optuna'"; train.py checks these first.
PLUGINS = (
    ("hparams_search=optuna", "hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper", "sweep"),
    ("hydra/sweeper=optuna", "hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper", "sweep"),
    ("hydra/launcher=submitit", "hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "sweep"),
)


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module that hides itself
        return False


def require_plugins(argv: Sequence[str]) -> None:
    """Exit 2 with the pip command when an override selects a Hydra plugin that is not installed."""
    for arg in argv:
        for prefix, module, package, extra in PLUGINS:
            if arg.lstrip("+~").startswith(prefix) and not importable(module):
                exit_for(ConfigError(f"{arg} needs the Hydra plugin {package}, which is not installed here. Install "
                                     f"the {extra} extra with pip install -e '.[{extra}]' (from the repository "
                                     "root), then run the command again."))
