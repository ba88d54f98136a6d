"""File writes that a crash cannot tear, and content hashes. Torch-free: used by every stage.

A write goes to a temporary file in the target's folder, is fsynced, gets the permissions a
plain ``open`` would give (mkstemp's are owner-only), and is renamed over the target; the
folder is then fsynced so the rename itself survives a power cut. A reader, or a process
killed at any instant, sees the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from edgevpr.core.errors import EdgeVPRError


def default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); harmless to skip where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """``with atomic_open(p) as fh: fh.write(...)``: ``p`` is replaced only if the block ends
    without an exception; otherwise the previous file is left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise EdgeVPRError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EdgeVPRError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where edgevpr keeps what it can rebuild (TensorRT engines built by ONNX Runtime,
    benchmark exports and maps): ``$EDGEVPR_CACHE``, else ``~/.cache/edgevpr``."""
    return Path(os.environ.get("EDGEVPR_CACHE") or Path.home() / ".cache" / "edgevpr")


_held_locks: dict[str, int] = {}  # lock file -> depth, for the locks this process holds
_held_guard = threading.Lock()


def lock_file(path: Path) -> Path:
    """The lock of ``path``: a hidden file beside it while a command holds it."""
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def exclusive(path: str | os.PathLike[str], what: str = "it") -> Iterator[None]:
    """Hold ``path``'s lock for the block, so that two commands changing one file cannot
    lose each other's work. Another process holding it: one EdgeVPRError line naming that
    process, at once (a build may hold it for hours). The same process may take it again
    inside the block.

    The lock is an advisory ``flock`` on a hidden file beside ``path`` (the kernel drops it
    when its holder exits, however it exits). The holder removes the file when it is done;
    a process that locked a file just removed finds its inode gone from the path and tries
    again, so two holders can never both believe they hold it."""
    lock = lock_file(Path(path))
    key = os.path.abspath(lock)
    with _held_guard:
        depth = _held_locks.get(key, 0)
        if depth:
            _held_locks[key] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _held_guard:
                _held_locks[key] -= 1
        return
    made = _missing_folders(lock.parent)
    fd = _locked(lock, path, what)
    try:
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}".encode(), 0)
        with _held_guard:
            _held_locks[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                _held_locks.pop(key, None)
            Path(lock).unlink(missing_ok=True)
    finally:
        os.close(fd)
        for folder in made:  # folders made for the lock alone, if nothing else came
            with contextlib.suppress(OSError):
                folder.rmdir()


def _missing_folders(folder: Path) -> list[Path]:
    """The folders of ``folder``'s path that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def _locked(lock: Path, path: str | os.PathLike[str], what: str) -> int:
    """An open descriptor of ``lock`` holding its flock, the file still at that path."""
    import fcntl

    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise EdgeVPRError(f"cannot lock {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "starting"
            os.close(fd)
            raise EdgeVPRError(f"{path} is being changed by another edgevpr command "
                               f"({holder}); {what} is left as it is, try again when it "
                               "ends") from None  # fmt: skip
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)  # its holder removed it as we opened it: take the one at the path


def remove_tree(folder: Path) -> None:
    """Remove a folder of ours so that an interruption cannot leave half of it under its
    name: renamed aside first (one atomic step), then deleted."""
    if not folder.exists():
        return
    aside = folder.with_name(f".{folder.name}.removing-{os.getpid()}-{os.urandom(4).hex()}")
    folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def file_identity(path: str | os.PathLike[str]) -> tuple[int, int, int, int] | None:
    """What tells one version of a file from another (device, inode, size, modification
    time): a rename over it or a write into it changes it. None when there is no file."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


def replace_folder(work: Path, folder: Path) -> None:
    """Put the finished ``work`` folder at ``folder``: what is there (the caller checked it
    is its own kind of folder) moves aside under a fresh name and is removed."""
    if not folder.exists():
        work.rename(folder)
        return
    old = folder.with_name(f".{folder.name}.old-{secrets.token_hex(6)}")
    folder.rename(old)
    try:
        work.rename(folder)
    except OSError:
        old.rename(folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
