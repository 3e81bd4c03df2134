"""Files that are either complete or absent: every output of the project is written here.

A file is written under a temporary name beside its final one and renamed when complete
(`os.replace` is atomic on POSIX file systems), so a killed job never leaves a half-written
file that looks finished. Folders (an export bundle) are written the same way.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any


def _temporary(path: str, suffix: str = "") -> str:
    # The extension stays last, for libraries that pick a format from it (numpy, matplotlib).
    return f"{path}.tmp{os.getpid()}{suffix}"


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "w", **kwargs) -> None:
    """Writes through `write(file)` into a temporary file, then renames it to `path`.

    Args:
      path: the final file.
      write: called with the open temporary file.
      mode: 'w' (text) or 'wb' (binary).
      **kwargs: for `open` (e.g. newline='' for CSV).
    """
    tmp = _temporary(path)
    try:
        with open(tmp, mode, **kwargs) as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path (same extension) for writers that take a file name; renamed to
    `path` when the block ends without an error, removed otherwise."""
    tmp = _temporary(path, os.path.splitext(path)[1])
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """A temporary folder renamed to `path` (replacing an older one) when the block succeeds."""
    tmp = _temporary(path.rstrip(os.sep))
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(obj: Any, path: str, indent: int = 1) -> None:
    """Writes JSON atomically."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=indent))


def write_csv(columns: dict[str, list], path: str) -> None:
    """Writes a CSV of equal-length columns atomically."""

    def write(f):
        writer = csv.writer(f)
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values(), strict=True))

    atomic_write(path, write, newline="")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)
