"""Standard KITTI split lists, shipped inside the package.

A split line is ``<date>/<date>_drive_<nnnn>_sync <frame index> <l|r>`` (the ``eigen``
test list zero-pads the index, the others do not). Lists live in
``jaxdepth/data/splits/kitti/<name>/<subset>_files.txt``; the large ones are stored
gzipped (``.txt.gz``) and read transparently.

| name            | subsets      | lines                 |
|-----------------|--------------|-----------------------|
| eigen           | test         | 697                   |
| eigen_benchmark | test         | 652                   |
| eigen_zhou      | train, val   | 39,810 / 4,424        |
| eigen_full      | train, val   | 45,200 / 1,776        |
"""
from __future__ import annotations

import functools
import gzip
import os
from importlib import resources
from typing import Iterable, NamedTuple

__all__ = ["SplitEntry", "KITTI_SPLITS", "read_split", "read_split_file", "parse_split_lines",
           "split_resource_name"]

#: standard KITTI splits and the subsets each one ships
KITTI_SPLITS: dict[str, tuple[str, ...]] = {
    "eigen": ("test",),
    "eigen_benchmark": ("test",),
    "eigen_zhou": ("train", "val"),
    "eigen_full": ("train", "val"),
}


class SplitEntry(NamedTuple):
    """One split line: ``folder`` (``<date>/<drive>_sync``), ``frame`` index, ``side``."""

    folder: str
    frame: int
    side: str  # "l" (image_02) or "r" (image_03)


def parse_split_lines(lines: Iterable[str], source: str = "<split>") -> list[SplitEntry]:
    """Parse split lines; blank lines are skipped, anything else malformed is a ValueError."""
    out = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise ValueError(f"{source}:{n}: expected '<date>/<drive>_sync <frame> <l|r>', "
                             f"got {line!r}")
        folder, frame = parts[0], parts[1]
        side = parts[2] if len(parts) == 3 else "l"
        try:
            idx = int(frame)
        except ValueError:
            raise ValueError(f"{source}:{n}: frame index must be an integer, "
                             f"got {frame!r}") from None
        if side not in ("l", "r") or idx < 0:
            raise ValueError(f"{source}:{n}: expected side 'l' or 'r' and frame >= 0, got {line!r}")
        out.append(SplitEntry(folder, idx, side))
    return out


def read_split_file(path: str | os.PathLike) -> list[SplitEntry]:
    """Read a user split file (plain text or ``.gz``). Missing -> FileNotFoundError; empty ->
    ValueError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected a KITTI split file at {path} "
                                "(lines '<date>/<drive>_sync <frame> <l|r>')")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        entries = parse_split_lines(f, path)
    if not entries:
        raise ValueError(f"split file {path} is empty: a split must list at least one frame")
    return entries


def split_resource_name(name: str, subset: str) -> str:
    """Package-relative path of a shipped list, e.g. ``splits/kitti/eigen/test_files.txt``."""
    if name not in KITTI_SPLITS:
        raise ValueError(f"unknown KITTI split {name!r}; known: {sorted(KITTI_SPLITS)} "
                         "(or pass the path of a split file)")
    if subset not in KITTI_SPLITS[name]:
        raise ValueError(f"split {name!r} has subsets {KITTI_SPLITS[name]}, not {subset!r}")
    return f"splits/kitti/{name}/{subset}_files.txt"


@functools.lru_cache(maxsize=16)
def _read_shipped(name: str, subset: str) -> tuple[SplitEntry, ...]:
    rel = split_resource_name(name, subset)
    base = resources.files("jaxdepth.data")
    for suffix, opener in (("", open), (".gz", gzip.open)):
        res = base.joinpath(rel + suffix)
        if res.is_file():
            with resources.as_file(res) as p, opener(p, "rt") as f:
                entries = parse_split_lines(f, f"jaxdepth/data/{rel}{suffix}")
            if not entries:
                raise ValueError(f"shipped split list jaxdepth/data/{rel}{suffix} is empty")
            return tuple(entries)
    raise FileNotFoundError(f"shipped split list jaxdepth/data/{rel}[.gz] is missing from the "
                            "installed package (package data not installed?)")


def read_split(name: str | os.PathLike, subset: str = "test") -> list[SplitEntry]:
    """Entries ``(folder, frame_index:int, side:'l'|'r')`` of a standard split or split file.

    ``name``: one of :data:`KITTI_SPLITS`, or a path to a split file (then ``subset`` is
    ignored). Never returns an empty list.
    """
    if isinstance(name, str) and name in KITTI_SPLITS:
        return list(_read_shipped(name, subset))
    path = os.fspath(name)
    if os.path.exists(path) or os.sep in path or path.endswith((".txt", ".gz")):
        return read_split_file(path)
    raise ValueError(f"unknown KITTI split {path!r}; known: {sorted(KITTI_SPLITS)} "
                     "(or pass the path of a split file)")
