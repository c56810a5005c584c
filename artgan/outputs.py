"""Where runs write: never over an earlier run's checkpoints or the user's files, and no empty run folder left
behind by a run that stopped on a bad setting.

* A train.py run dir that already holds checkpoints is only reused on request: ``ckpt_path=auto`` (or a path)
  resumes, ``overwrite=true`` moves the earlier run's files into ``<run dir>/previous_<date>/`` (nothing is
  deleted), anything else stops with exit 2 before a file is touched. ``RunDirGuard`` (a Hydra callback, see
  conf/hydra/default.yaml) applies the rule before Hydra writes ``.hydra/`` and the log file, so the earlier
  run's record of its settings is kept too; ``artgan.train`` applies it again inside the task, for multirun
  jobs (whose folders Hydra creates per job).
* generate.py refuses an ``output_dir`` that holds files unless ``overwrite=true`` (then it replaces the files it
  writes, and never deletes others).
* A run that stops on a config error leaves its run dir as it found it (``artgan.cli``): a folder it created
  that holds nothing but Hydra's own files is removed (failed validations leave no empty
  ``outputs/train/<date>``), an existing one gets its earlier ``.hydra/`` settings back.
"""

from __future__ import annotations

import logging
import os
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from artgan.errors import ConfigError

log = logging.getLogger(__name__)

PREVIOUS_PREFIX = "previous_"
# Recorded before Hydra writes into the run dir: the run dirs this process created, and the .hydra/ files an
# existing run dir held (restored if this run stops on a bad setting, e.g. a resume with other model settings).
_created_run_dirs: set[Path] = set()
_hydra_snapshots: dict[Path, dict[Path, bytes]] = {}


# ------------------------------------------------------------------------------------------- run dirs
def checkpoints_in(run_dir: str | os.PathLike) -> list[Path]:
    folder = Path(run_dir) / "checkpoints"
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def prepare_run_dir(run_dir: str | os.PathLike, ckpt_path: Any, overwrite: bool, keep: set[str] = frozenset()
                    ) -> None:
    """Let a run use ``run_dir``: fine when it holds no checkpoint or the run resumes; with ``overwrite`` the
    earlier run's files (all but ``keep``, this run's own) move to ``previous_<date>/``; else a ConfigError."""
    run_dir = Path(run_dir)
    found = checkpoints_in(run_dir)
    resumes = ckpt_path not in (None, "", "auto") or (ckpt_path == "auto" and (run_dir / "checkpoints" /
                                                                               "last.ckpt").is_file())
    if not found or resumes:
        return
    if not overwrite:
        names = ", ".join(p.name for p in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        resume = (f"ckpt_path=auto (or ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'})"
                  if (run_dir / "checkpoints" / "last.ckpt").is_file() else f"ckpt_path={found[-1]}")
        raise ConfigError(
            f"The run dir {run_dir} already holds an earlier run's checkpoints ({names}); a new run there would "
            f"overwrite them, its samples and its TensorBoard curves. To continue that run, add {resume}; to "
            f"start over in this folder, add overwrite=true (the earlier run's files are moved to "
            f"{run_dir / (PREVIOUS_PREFIX + '<date>')}/, nothing is deleted); or choose another hydra.run.dir."
        )
    moved_to = move_aside(run_dir, keep)
    log.warning("overwrite=true: moved the earlier run's files in %s to %s", run_dir, moved_to)


def move_aside(run_dir: Path, keep: set[str] = frozenset()) -> Path:
    """Rename every entry of ``run_dir`` except ``keep`` and earlier ``previous_*`` folders into a new
    ``previous_<date>`` folder (renames within one folder: nothing is copied or deleted)."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    target, n = run_dir / f"{PREVIOUS_PREFIX}{stamp}", 1
    while target.exists():
        n += 1
        target = run_dir / f"{PREVIOUS_PREFIX}{stamp}_{n}"
    entries = [e for e in sorted(run_dir.iterdir()) if e.name not in keep and not e.name.startswith(PREVIOUS_PREFIX)]
    target.mkdir()
    for entry in entries:
        entry.rename(target / entry.name)
    return target


def hydra_files(folder: str | os.PathLike) -> set[str]:
    """Names of what Hydra wrote into ``folder`` for this job (``.hydra/``, ``<job>.log``) when ``folder`` is
    the job's output dir; empty outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    hydra = HydraConfig.get()
    if Path(str(hydra.runtime.output_dir)).absolute() != Path(folder).absolute():
        return set()
    names = {f"{hydra.job.name}.log"}
    if hydra.output_subdir:
        names.add(str(hydra.output_subdir))
    return names


def undo_run_dir() -> None:
    """After a run stopped on a config error, leave its run dir as it was: a folder this process created that
    holds only Hydra's files is removed, an existing one gets its earlier .hydra/ files back. Only Hydra's own
    files are unlinked and folders are removed with rmdir, which refuses a folder that holds anything else."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    try:
        run_dir = Path(str(HydraConfig.get().runtime.output_dir)).absolute()
    except Exception:  # noqa: BLE001 - runtime.output_dir is unset before Hydra's run_job
        return
    for path, data in _hydra_snapshots.pop(run_dir, {}).items():
        path.write_bytes(data)
    ours = hydra_files(run_dir)
    if run_dir not in _created_run_dirs or not run_dir.is_dir() or any(e.name not in ours for e in run_dir.iterdir()):
        return
    try:
        for name in ours:
            entry = run_dir / name
            if entry.is_dir():
                for f in entry.glob("*.yaml"):
                    f.unlink()
                entry.rmdir()
            elif entry.exists():
                entry.unlink()
        run_dir.rmdir()
    except OSError as err:  # a file appeared, or Windows keeps the open log: leave the folder
        log.debug("Kept %s: %s", run_dir, err)


class RunDirGuard(Callback):
    """Hydra callback: before Hydra creates the run dir and writes into it, apply :func:`prepare_run_dir`
    (refuse, or move the earlier run aside with its ``.hydra/``) and note what :func:`undo_run_dir` needs: whether
    the folder is new, else its ``.hydra/`` files."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            run_dir = Path(str(config.hydra.run.dir)).absolute()
        except Exception:  # noqa: BLE001 - an unresolvable run dir is Hydra's to report
            return
        if not run_dir.exists():
            _created_run_dirs.add(run_dir)
            return
        try:
            prepare_run_dir(run_dir, config.get("ckpt_path"), bool(config.get("overwrite", False)))
        except ConfigError as err:
            from artgan.cli import exit_for

            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                traceback.print_exc()  # Hydra turns an exception raised in a callback into a mere warning
            exit_for(err)
        subdir = config.hydra.get("output_subdir")
        if subdir and (run_dir / subdir).is_dir():
            _hydra_snapshots[run_dir] = {f: f.read_bytes() for f in (run_dir / subdir).glob("*.yaml")}


# ------------------------------------------------------------------------------------- output folders
def check_output_dir(folder: str | os.PathLike, overwrite: bool, key: str = "output_dir") -> Path:
    """``folder`` may be written: it is not a file and, unless ``overwrite``, holds nothing (Hydra's own files
    of this run aside). Returns it as a Path."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}={str(folder)!r} is a file, not a folder. Pass {key}=<a new or empty folder> "
                          "(it is created when missing).")
    if overwrite or not folder.is_dir():
        return folder
    ours = hydra_files(folder)
    found = sorted(e.name for e in folder.iterdir() if e.name not in ours)
    if found:
        names = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise ConfigError(
            f"{key}={str(folder)!r} is not empty ({names}): writing there could overwrite your files. Pass a new "
            f"or empty folder ({key}=<folder>), or add overwrite=true to replace the files this run writes "
            "(files with other names are never deleted)."
        )
    return folder
