"""Find image files under a folder, whatever its layout, in a deterministic order.

Symbolic links are followed (a link to a folder elsewhere is a common way to assemble a data set), but each
real folder and each real file is visited once, so a loop (`ln -s . a`) can neither multiply the images nor
hang the walk. Folders that hold an ArtGAN run (samples, plots, checkpoints) are skipped so that a run's
own output is never trained on.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from artgan.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_LISTED = 5

KAGGLE_HINT = (
    "To get the Abstract Art Gallery dataset: `kaggle datasets download -d bryanb/abstract-art-gallery` "
    "(or download it from https://www.kaggle.com/datasets/bryanb/abstract-art-gallery), unzip it "
    "(`unzip abstract-art-gallery.zip -d data/abstract-art`) and pass data.root=data/abstract-art; "
    "any folder layout works. Or train on the built-in generator with data=procedural."
)

# Notices already logged by this process: config validation and the data module both list the folder,
# and the user should read each notice once.
_logged: set[str] = set()


def plural(n: int, noun: str) -> str:
    """'1 image', '2 images' (nouns here all take a plain -s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def natural_key(path: str) -> list:
    """Sort key so that image_2 comes before image_10 (and the order never depends on the OS)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


def run_dir_marker(path: str, names: set[str]) -> str | None:
    """Why the folder `path` (holding entries `names`) looks like an ArtGAN run's output folder, or None."""
    if ".hydra" in names and os.path.isdir(os.path.join(path, ".hydra")):
        return ".hydra/"
    if "checkpoints" in names and os.path.isdir(ckpt := os.path.join(path, "checkpoints")):
        if "samples" in names and os.path.isdir(os.path.join(path, "samples")):
            return "samples/ beside checkpoints/"
        try:
            if any(n.endswith(".ckpt") for n in os.listdir(ckpt)):
                return "checkpoints/*.ckpt"
        except OSError:
            pass
    return None


@dataclass
class Discovery:
    """What a walk of data.root found: the images, and everything it left out on purpose."""

    root: Path
    files: list[Path] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (link, why it was not followed)
    run_dirs: list[tuple[str, str]] = field(default_factory=list)  # (folder, marker)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (folder or file, error)


def _identity(st: os.stat_result, path: str):
    # Some network/FUSE file systems report st_ino 0: fall back to the resolved path there.
    return (st.st_dev, st.st_ino) if st.st_ino else ("path", os.path.realpath(path))


def discover(root: str | os.PathLike) -> Discovery:
    """Walk `root` (following links once per real path); raises ConfigError if it is missing or a file.

    Real entries are walked before any link, so an image reachable both directly and through a link is
    listed under its real path; links are then followed in sorted order (links found inside a linked
    folder after that), which makes the choice between aliases deterministic.
    """
    root = Path(root).expanduser()
    if not root.exists():  # a bad setting: exit 2 like the others
        raise ConfigError(
            f"data.root={str(root)!r} does not exist (resolved to {root.absolute()}). {KAGGLE_HINT}"
        )
    if not root.is_dir():
        raise ConfigError(f"data.root={str(root)!r} is a file, not a folder of images. {KAGGLE_HINT}")

    out = Discovery(root)
    seen_dirs, seen_files = set(), set()
    found: list[str] = []
    pending_links: list[tuple[str, str]] = []  # (absolute path, relative path), in discovery order

    def add_file(path: str, rel: str, st: os.stat_result, via_link: bool) -> None:
        key = _identity(st, path)
        if key in seen_files:
            if via_link:
                out.links.append((rel, "an image already found"))
            return  # a hard link of an image already listed: the same picture
        seen_files.add(key)
        found.append(rel)

    def walk(top: str, top_rel: str, via_link: bool) -> None:
        stack = [(top, top_rel)]
        while stack:
            path, rel = stack.pop()
            try:
                st = os.stat(path)
            except OSError as e:
                out.unreadable.append((rel or ".", e.strerror or str(e)))
                continue
            key = _identity(st, path)
            if key in seen_dirs:
                if via_link and rel == top_rel:
                    out.links.append((rel, "a folder already walked"))
                continue  # a folder reached again (e.g. a linked folder that contains data.root)
            seen_dirs.add(key)
            try:
                with os.scandir(path) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                out.unreadable.append((rel or ".", e.strerror or str(e)))
                continue
            if rel and (marker := run_dir_marker(path, {e.name for e in entries})):
                out.run_dirs.append((rel, marker))
                continue
            subdirs = []
            for entry in entries:
                if entry.name.startswith("."):  # hidden: .git, .hydra, macOS "._x.jpg" resource forks
                    continue
                entry_rel = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_symlink():
                    pending_links.append((entry.path, entry_rel))  # after every real entry: see docstring
                elif entry.is_dir(follow_symlinks=False):
                    subdirs.append((entry.path, entry_rel))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    try:
                        add_file(entry.path, entry_rel, entry.stat(), via_link=False)
                    except OSError as e:
                        out.unreadable.append((entry_rel, e.strerror or str(e)))
            stack.extend(reversed(subdirs))  # depth-first in name order

    walk(str(root), "", via_link=False)
    i = 0
    while i < len(pending_links):  # grows while linked folders are walked
        path, rel = pending_links[i]
        i += 1
        try:
            st = os.stat(path)  # follows the link (and any chain of links)
        except OSError as e:  # dangling, or a cycle of links (ELOOP)
            out.links.append((rel, f"broken: {e.strerror or e}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            walk(path, rel, via_link=True)
        elif os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
            add_file(path, rel, st, via_link=True)

    found.sort(key=natural_key)
    out.files = [root / p for p in found]
    return out


def _describe_link(root: Path, rel: str, why: str) -> str:
    try:
        target = os.readlink(root / rel)
    except OSError:
        target = "?"
    return f"{rel} -> {target} ({why})"


def _log_once(message: str, *args) -> None:
    text = message % args
    if text not in _logged:
        _logged.add(text)
        log.warning(text)


def _listed(items: list[str]) -> str:
    return ", ".join(items[:MAX_LISTED]) + (", ..." if len(items) > MAX_LISTED else "")


def report(found: Discovery) -> None:
    """One warning per kind of thing left out (once per process and folder)."""
    root = found.root
    if found.links:
        _log_once(
            "data.root=%s: skipped %s (each real folder and file is used once, so a link that loops or leads "
            "to something already found is not followed): %s. Remove them to silence this warning.",
            root,
            plural(len(found.links), "link"),
            _listed([_describe_link(root, rel, why) for rel, why in found.links]),
        )
    if found.run_dirs:
        _log_once(
            "data.root=%s: skipped %s holding an ArtGAN run's output (sample grids, plots and "
            "checkpoints are not training data): %s. Keep run outputs outside data.root "
            "(hydra.run.dir=...) to silence this warning.",
            root,
            plural(len(found.run_dirs), "folder"),
            _listed([f"{rel}/ ({marker})" for rel, marker in found.run_dirs]),
        )
    if found.unreadable:
        _log_once(
            "data.root=%s: could not read %d of its folders or files, so the images in them are left out: "
            "%s. Fix their permissions to include them (the next run picks them up).",
            root,
            len(found.unreadable),
            _listed([f"{rel} ({err})" for rel, err in found.unreadable]),
        )


def find_images(root: str | os.PathLike) -> list[Path]:
    """All image files below `root` (recursive, links followed once), natural-sorted by relative path.

    Hidden files and folders (".git", macOS "._x.jpg" resource forks), other extensions and ArtGAN run
    folders are ignored; what was skipped is logged once. Raises ConfigError when the folder is missing,
    is a file, or holds no image.
    """
    found = discover(root)
    report(found)
    if not found.files:
        skipped = ""
        if found.run_dirs:
            skipped = (
                f" It does hold {plural(len(found.run_dirs), 'ArtGAN run output folder')} "
                f"({_listed([rel for rel, _ in found.run_dirs])}), which are never used as training data."
            )
        raise ConfigError(
            f"data.root={str(found.root)!r} holds no image file (looked recursively for "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}).{skipped} {KAGGLE_HINT}"
        )
    return found.files


def check_run_dir_outside(data_root: str | os.PathLike | None, run_dir: str | os.PathLike | None) -> None:
    """Raise ConfigError when the run's output folder is data.root or inside it (links resolved).

    A run writes sample grids and plots as PNGs; inside data.root the next run (or a resume) would find
    them. Discovery skips such folders anyway; this stops the mistake before a run starts. Does nothing
    when either path is None (e.g. procedural data).
    """
    from artgan.paths import absolute_path

    if data_root is None or run_dir is None:
        return
    data = Path(os.path.realpath(absolute_path(data_root)))
    run = Path(os.path.realpath(absolute_path(run_dir)))
    if run == data or data in run.parents:
        run_shown = f"{str(run_dir)!r}" + ("" if str(run) == str(run_dir) else f" (resolved to {run})")
        data_shown = f"{str(data_root)!r}" + ("" if str(data) == str(data_root) else f" (resolved to {data})")
        raise ConfigError(
            f"The run's output folder {run_shown} is inside data.root={data_shown}: the sample grids and plots it writes would end up "
            "among the training images. Put the outputs elsewhere, e.g. hydra.run.dir=outputs/my_run "
            "(the default is outputs/<task>/<date>), or move the images to a folder of their own and "
            "point data.root at it."
        )
