"""Decode-once cache: uint8 arrays (N, 3, S, S) in one .npy plus a JSON manifest.

Layout: <cache_dir>/<key>/images.npy and manifest.json, where key hashes everything the pixels depend
on (source, file list with sizes and mtimes, sizes, preprocessing settings, CACHE_VERSION). The build
holds an exclusive flock on <cache_dir>/<key>.lock, so DDP ranks and multirun jobs that start together
build it once; files are written to temporary names and os.replace'd, and the manifest is written last,
so a crashed build never looks complete.
"""

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from artgan.errors import ArtGANError

from .discovery import KAGGLE_HINT
from .preprocess import BadImageError, PreprocessSettings, preprocess_file

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent builds then simply race (last os.replace wins)
    fcntl = None

log = logging.getLogger(__name__)

# Bump whenever preprocessing or the generator changes the pixels they produce.
CACHE_VERSION = 1
MAX_LISTED = 5


def cache_key(identity: dict) -> str:
    blob = json.dumps({"cache_version": CACHE_VERSION, **identity}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def file_identity(files: list[Path], root: Path) -> list:
    """[relative path, size, mtime_ns] per file: changes when a file is added, removed, or rewritten."""
    out = []
    for f in files:
        st = f.stat()
        out.append([f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return out


@contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)  # blocks while another process builds this key
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_npy(array: np.ndarray):
    def write(tmp: Path):
        with open(tmp, "wb") as f:  # a file object, so np.save does not append ".npy" to the tmp name
            np.save(f, array)

    return write


def load_or_build(
    cache_dir: str | os.PathLike, identity: dict, build: Callable[[], tuple[np.ndarray, dict]]
) -> tuple[np.ndarray, dict]:
    """Return (images memory-mapped read-only, manifest), calling `build()` only if not cached yet."""
    key = cache_key(identity)
    cache_dir = Path(cache_dir)
    directory = cache_dir / key
    manifest_path, images_path = directory / "manifest.json", directory / "images.npy"
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
                start = time.perf_counter()
                images, info = build()
                _atomic_write(images_path, _save_npy(images))
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
                _atomic_write(manifest_path, lambda p: p.write_text(json.dumps(manifest, indent=1)))
                log.info(
                    "Cached %d images in %s (%.1f s)", images.shape[0], directory, manifest["build_seconds"]
                )
    manifest = json.loads(manifest_path.read_text())
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
            "Skipped %d of %d image files under %s that cannot be used (%s%s). Delete or re-save them "
            "to silence this warning.",
            len(skipped),
            len(used) + len(skipped),
            root,
            listed,
            "; ..." if len(skipped) > MAX_LISTED else "",
        )
    if not used:
        raise ArtGANError(
            f"data.root={str(root)!r}: none of its {len(files)} image files could be read "
            f"(e.g. {skipped[0][0]}: {skipped[0][1]}). {KAGGLE_HINT}"
        )
    if upscaled:
        log.warning(
            "%d of %d images are smaller than %d px on their shorter side (after border crop/trim) and were "
            "upscaled, which blurs them (e.g. %s). Use a lower model.resolution or remove them if this matters.",
            len(upscaled),
            len(used),
            settings.size,
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
