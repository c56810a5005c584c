"""Decode-once cache: uint8 arrays (N, 3, S, S) in one .npy plus a JSON manifest.

Layout: <cache_dir>/<key>/images.npy and manifest.json, where key hashes everything the pixels depend
on (source, file list with sizes, mtimes and ctimes, sizes, preprocessing settings, CACHE_VERSION). The
build holds an exclusive flock on <cache_dir>/<key>.lock, so DDP ranks and multirun jobs that start
together build it once; files are written to temporary names and os.replace'd, and the manifest is written
last, so a crashed build never looks complete. Temporary files left by a killed build are removed by the
next build, once no process holds their key's lock.
"""

import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from artgan.errors import ArtGANError
from artgan.io import atomic_write

from .discovery import KAGGLE_HINT, plural
from .preprocess import BadImageError, PreprocessSettings, preprocess_file

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent builds then simply race (last os.replace wins)
    fcntl = None

log = logging.getLogger(__name__)

# Bump whenever preprocessing or the generator changes the pixels they produce.
CACHE_VERSION = 1
MAX_LISTED = 5

# A run blocked on another process's build says so after LOCK_NOTICE_AFTER s, then every LOCK_NOTICE_EVERY s.
LOCK_NOTICE_AFTER = 2.0
LOCK_NOTICE_EVERY = 30.0
LOCK_POLL_SECONDS = 0.1

# Only names this module writes: <key>/ folders and artgan.io.atomic_write's ".<name>.<pid>.tmp" files in them.
_KEY_DIR = re.compile(r"^[0-9a-f]{20}$")
_TEMP_FILE = re.compile(r"^\.(images\.npy|manifest\.json)\.\d+\.tmp$")


def cache_key(identity: dict) -> str:
    blob = json.dumps({"cache_version": CACHE_VERSION, **identity}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def file_identity(files: list[Path], root: Path) -> list:
    """[relative path, size, mtime_ns, ctime_ns] per file: changes when a file is added, removed or rewritten.

    The ctime matters for files the build had to skip: fixing permissions (chmod) or replacing a corrupt
    file by a good one of the same size with its old mtime restored leaves size and mtime alone, but
    always moves the ctime, so the next run rebuilds and picks the file up instead of reusing a cache that
    leaves it out. The price is a rebuild after a metadata-only change (chmod, chown) of any image.
    """
    out = []
    for f in files:
        st = f.stat()
        out.append([f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return out


def _lock_owner(lock_path: Path) -> str:
    try:
        owner = lock_path.read_text().strip()
    except OSError:
        owner = ""
    return owner or "pid unknown"


def _acquire(fh, lock_path: Path) -> None:
    """flock(LOCK_EX), polling so that a long wait for another process's build is reported."""
    start = time.monotonic()
    notice_at = start + LOCK_NOTICE_AFTER
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if now >= notice_at:
            log.info(
                "Waiting for %s, held by another run (%s) that is building the same image cache (%.0f s so "
                "far); this run goes on with the cached images as soon as that build is done.",
                lock_path,
                _lock_owner(lock_path),
                now - start,
            )
            notice_at = now + LOCK_NOTICE_EVERY
        time.sleep(LOCK_POLL_SECONDS)


@contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a+") as fh:
        if fcntl is not None:
            _acquire(fh, lock_path)  # waits while another process builds this key
            fh.truncate(0)  # say who holds it, for the message of a run that waits ("a+" appends at 0)
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            fh.flush()
        try:
            yield
        finally:
            if fcntl is not None:
                fh.truncate(0)
                fcntl.flock(fh, fcntl.LOCK_UN)


def _unlocked_now(lock_path: Path) -> bool:
    """True if no process holds `lock_path` (checked by taking and releasing it without waiting)."""
    if fcntl is None:
        return False  # cannot tell: leave the files alone
    try:
        with open(lock_path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(fh, fcntl.LOCK_UN)
            return True
    except OSError:
        return False


def remove_stale_temp_files(cache_dir: Path, own_key: str) -> None:
    """Delete temporary files of cache builds that were killed mid-write (they can be GBs).

    Only files named like our own temporary files (<key>/.images.npy.<pid>.tmp, .manifest.json.<pid>.tmp),
    and only for keys no process is building: our own key (we hold its lock) or a key whose lock is free.
    A build that takes the lock after our check starts with new temporary names, never these.
    """
    try:
        key_dirs = sorted(d for d in cache_dir.iterdir() if _KEY_DIR.match(d.name) and d.is_dir())
    except OSError:
        return
    removed, freed = [], 0
    for d in key_dirs:
        try:
            temps = [p for p in d.iterdir() if _TEMP_FILE.match(p.name) and p.is_file()]
        except OSError:
            continue
        if not temps or (d.name != own_key and not _unlocked_now(cache_dir / f"{d.name}.lock")):
            continue
        for p in temps:
            try:
                size = p.stat().st_size
                p.unlink()
            except OSError:
                continue
            removed.append(f"{d.name}/{p.name}")
            freed += size
    if removed:
        log.info(
            "Removed %s left in %s by an interrupted cache build (%.1f MB): %s",
            plural(len(removed), "stale temporary file"),
            cache_dir,
            freed / 1e6,
            ", ".join(removed[:MAX_LISTED]) + (", ..." if len(removed) > MAX_LISTED else ""),
        )


def load_or_build(
    cache_dir: str | os.PathLike,
    identity: dict,
    build: Callable[[], tuple[np.ndarray, dict]],
    on_hit: Callable[[dict], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Return (images memory-mapped read-only, manifest), calling `build()` only if not cached yet.

    `on_hit(manifest)` is called when the cache was already there (e.g. to repeat the build's warnings).
    """
    key = cache_key(identity)
    cache_dir = Path(cache_dir)
    directory = cache_dir / key
    manifest_path, images_path = directory / "manifest.json", directory / "images.npy"
    built = False
    if not manifest_path.exists():
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtGANError(
                f"Cannot create the image cache folder {str(directory)!r} ({e}). Set data.cache_dir "
                "(or the ARTGAN_CACHE_DIR environment variable) to a writable folder."
            ) from e
        with _locked(cache_dir / f"{key}.lock"):
            if not manifest_path.exists():  # another process may have built it while we waited
                remove_stale_temp_files(cache_dir, key)
                start = time.perf_counter()
                images, info = build()
                atomic_write(images_path, lambda f: np.save(f, images))  # a file object: no ".npy" appended
                manifest = {
                    "key": key,
                    "cache_version": CACHE_VERSION,
                    "count": int(images.shape[0]),
                    "shape": list(images.shape),
                    "build_seconds": round(time.perf_counter() - start, 3),
                    "built_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "identity": identity,
                    **info,
                }
                atomic_write(manifest_path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
                log.info(
                    "Cached %s in %s (%.1f s)",
                    plural(int(images.shape[0]), "image"),
                    directory,
                    manifest["build_seconds"],
                )
                built = True
    manifest = json.loads(manifest_path.read_text())
    if on_hit is not None and not built:
        on_hit(manifest)
    return np.load(images_path, mmap_mode="r"), manifest


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def decode_folder(
    files: list[Path],
    root: Path,
    settings: PreprocessSettings,
    limit: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """Preprocess `files` in order (threads: Pillow releases the GIL while decoding and resizing).

    Unusable files are skipped with one warning; with `limit`, stops after that many good images.
    """
    n_want = len(files) if limit is None else min(limit, len(files))
    images = np.empty((n_want, 3, settings.size, settings.size), dtype=np.uint8)
    used, skipped, upscaled = [], [], []
    bar = tqdm(total=n_want, desc=f"Caching images at {settings.size} px", unit="img", disable=not progress)
    with ThreadPoolExecutor(workers or default_workers()) as pool:
        # Lazy ordered map in chunks: stops early once `limit` good images are in.
        chunk = 4 * (workers or default_workers())
        for start in range(0, len(files), chunk):
            batch = files[start : start + chunk]
            for path, result in zip(
                batch, pool.map(_try_preprocess, batch, [settings] * len(batch)), strict=True
            ):
                if len(used) == n_want:
                    break
                rel = path.relative_to(root).as_posix()
                if isinstance(result, str):
                    skipped.append([rel, result])
                    continue
                images[len(used)], was_upscaled = result
                used.append(rel)
                if was_upscaled:
                    upscaled.append(rel)
                bar.update(1)
            if len(used) == n_want:
                break
    bar.close()

    if skipped:
        listed = "; ".join(f"{p}: {why}" for p, why in skipped[:MAX_LISTED])
        log.warning(
            "Skipped %d of %s under %s that cannot be used (%s%s). Delete or re-save them "
            "to silence this warning.",
            len(skipped),
            plural(len(used) + len(skipped), "image file"),
            root,
            listed,
            "; ..." if len(skipped) > MAX_LISTED else "",
        )
    if not used:
        what = (
            "its only image file could not be read"
            if len(files) == 1
            else f"none of its {len(files)} image files could be read"
        )
        raise ArtGANError(
            f"data.root={str(root)!r}: {what} ({'e.g. ' if len(files) > 1 else ''}{skipped[0][0]}: "
            f"{skipped[0][1]}). Fix or replace the files. {KAGGLE_HINT}"
        )
    if upscaled:
        log.warning(
            "%d of %s %s smaller than %d px on the shorter side (after border crop/trim) and upscaled, "
            "which blurs %s (e.g. %s). Use a lower model.resolution or remove such images if this matters.",
            len(upscaled),
            plural(len(used), "image"),
            "is" if len(upscaled) == 1 else "are",
            settings.size,
            "it" if len(upscaled) == 1 else "them",
            ", ".join(upscaled[:MAX_LISTED]),
        )
    return images[: len(used)], {"files": used, "skipped": skipped, "upscaled": len(upscaled)}


def _try_preprocess(path: Path, settings: PreprocessSettings):
    try:
        return preprocess_file(path, settings)
    except BadImageError as e:
        return str(e)
    except (OSError, ValueError, MemoryError) as e:  # anything else a weird file can throw at Pillow
        return f"{type(e).__name__}: {e}"
