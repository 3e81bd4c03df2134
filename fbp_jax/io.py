"""Files that are either complete or absent: every output of the project is written here.

A file is written under a temporary name beside its final one and renamed when complete
(`os.replace` is atomic on POSIX file systems), so a killed job never leaves a half-written
file that looks finished. Folders (an export bundle) are written the same way.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

# ---------------------------------------------------------------------------------------------
# A full disk: one line that says where, how much, and that a rerun continues.

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


class DiskFullError(OSError):
    """A file system is full (or its quota reached); the message is one line that names the
    folder, the space needed and free, and says that a rerun continues."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an exception it was raised from or during, is a full disk (whatever
    library raised it: OSError, TensorFlow, TensorStore)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return True
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            return True
        if any(t in str(error) for t in _FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def free_bytes(path: str) -> int:
    """Free bytes on the file system of `path` (or of its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def megabytes(n: float) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 2**10:,.0f} kB"


def disk_full_message(folder: str, what: str, needed: int | None, rerun: str) -> str:
    """'<folder> is full: <what> needs about N MB more, M MB free; <rerun>'."""
    need = f"needs about {megabytes(needed)} more" if needed else "needs more space"
    return (
        f"{os.path.abspath(folder)} is full: {what} {need}, {megabytes(free_bytes(folder))} "
        f"free there. {rerun}"
    )


def require_space(folder: str, needed: int, what: str, rerun: str) -> None:
    """Refuses to start work that will not fit (`needed` bytes) in `folder`'s file system."""
    if free_bytes(folder) < needed:
        raise DiskFullError(errno.ENOSPC, disk_full_message(folder, what, needed, rerun))


@contextlib.contextmanager
def full_disk_as_one_line(
    folder: str, what: str, rerun: str, needed: Callable[[], int] | None = None
):
    """Turns a full disk met inside the block (however deep and by whichever library) into a
    `DiskFullError` with one line; other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as e:
        if not is_disk_full(e):
            raise
        amount = needed() if needed is not None else None
        raise DiskFullError(errno.ENOSPC, disk_full_message(folder, what, amount, rerun)) from None


SETTLE_SECONDS = 2.0


@contextlib.contextmanager
def quiet_stderr_on_full_disk():
    """Holds back what is written to the process's standard error (file descriptor 2, threads
    and C libraries included) inside the block: released when the block ends, dropped when it
    fails on a full disk (the checkpointer's threads print tracebacks of their own then)."""
    import sys
    import threading

    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b"")), daemon=True
    )
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    failed = None
    try:
        yield
    except BaseException as e:
        failed = e
        raise
    finally:
        if is_disk_full(failed):
            import time

            time.sleep(SETTLE_SECONDS)  # The writes still in flight fail (and print) now.
        sys.stderr.flush()
        os.dup2(saved, 2)  # Closes the pipe's last write end: the reader finishes.
        os.close(saved)
        reader.join(timeout=5)
        os.close(read_end)
        if not is_disk_full(failed):
            os.write(2, b"".join(chunks))


@contextlib.contextmanager
def exit_on_full_disk(status: int = 2):
    """For a command's main: a `DiskFullError` prints its one line and exits with `status`
    at once (no interpreter shutdown, where libraries' threads would print more)."""
    import sys

    try:
        yield
    except DiskFullError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # Threads still failing stay quiet.
        os._exit(status)


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
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        write(f)


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
