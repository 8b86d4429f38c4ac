"""One writer per artifact directory: a lock that dies with the process holding it.

Two processes writing one run directory (a requeued job while its first copy still runs, a
second terminal) interleave metrics lines and race the emptiness check, so every writer of an
artifact directory (teacher run, student set, export output) holds a lock for as long as it
writes; a second writer is refused at once with one line naming the holder's pid and host.
Readers never take it: a finished or running directory stays readable.

The lock is `fcntl.flock` on a lock file inside the directory. The kernel drops it when the
holder's last descriptor closes, SIGKILL and OOM kills included, so a dead holder never blocks
the next run (a pid file would need guessing whether a pid, maybe reused, maybe on another host,
is still alive). A lock file left on disk by a dead holder is simply locked again. The file
holds the holder's pid and host only for the refusal message. Which file names a directory's
lock is its owner module's business (`teacher.run_dir`, `distill.student_set`,
`export.exported`); the mechanism lives here once.

Functions that write call `hold(lock_file, what)` once the directory is known, inside a
function decorated with `@releases_locks`, which releases every lock taken in that call when
it returns or raises (so a writer needs no re-indented `with` block around its body).
"""

from __future__ import annotations

import contextvars
import errno
import fcntl
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from crl_distill.errors import CrlDistillError

P = ParamSpec("P")
R = TypeVar("R")

#: how long a refused process waits for a holder that has just locked to write its pid
HOLDER_WAIT_S = 1.0
#: flock errors meaning the filesystem has no locks at all (some NFS and Lustre mounts):
#: writing unlocked, as before locks existed, beats refusing every run there
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
#: attempts to lock a file that keeps being unlinked by holders releasing it
_ATTEMPTS = 100


def read_holder(lock_file: str | os.PathLike, wait_s: float = 0.0) -> dict[str, Any] | None:
    """The `{"pid", "host", "since"}` a lock file records; None when it is missing or unreadable.

    A holder writes its record just after locking, so a refused process may read the file in
    between (empty, or a dead holder's record half overwritten): `wait_s` retries that long.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = json.loads(Path(lock_file).read_bytes())
            if isinstance(info, dict) and isinstance(info.get("pid"), int):
                return info
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def refusal(lock_file: str | os.PathLike, what: str) -> str:
    """The one-line message for a process refused by `lock_file`'s holder."""
    lock_file = Path(lock_file)
    info = read_holder(lock_file, HOLDER_WAIT_S)
    who = f"pid {info['pid']} on host {info.get('host', '?')}" if info else "pid unknown"
    return (f"{lock_file.parent} is in use by another crl-distill {what} ({who}; lock file "
            f"{lock_file}); wait for it to finish or stop it")


class DirLock:
    """An exclusive lock on `lock_file`'s directory, created (with the directory) if missing.

    `acquire` raises a one-line CrlDistillError naming the holder when another process holds
    it. `release` removes the lock file, and the directories `acquire` had to create when they
    are left empty (a refused or failed write leaves no empty run directory behind).
    """

    def __init__(self, lock_file: str | os.PathLike, what: str):
        self.path, self.what = Path(lock_file), what
        self._fd: int | None = None
        self._created: list[Path] = []

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirLock:
        if self.held:
            raise RuntimeError(f"{self.path} is already held by this DirLock")
        for _ in range(_ATTEMPTS):
            self._created = _make_dirs(self.path.parent) or self._created
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                self._remove_created()
                raise CrlDistillError(f"{self.path}: cannot create the lock file "
                                      f"({e.strerror or type(e).__name__})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._remove_created()
                raise CrlDistillError(refusal(self.path, self.what)) from None
            except OSError as e:
                os.close(fd)
                if e.errno not in _NO_LOCKS:
                    raise
                print(f"warning: {self.path.parent}: the filesystem has no file locks; writing "
                      f"without a lock", file=sys.stderr)
                return self
            # A holder releasing unlinks the file while we waited on its inode: lock the new one.
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            self._remove_created()
            raise CrlDistillError(refusal(self.path, self.what))
        self._fd = fd
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode() + b"\n"
        try:
            # Overwrite, then cut: a reader sees a whole record or an unparsable mix, retried.
            os.pwrite(fd, record, 0)
            os.ftruncate(fd, len(record))
        except OSError as e:
            self.release()
            raise CrlDistillError(f"{self.path}: cannot write the lock file "
                                  f"({e.strerror or type(e).__name__})") from None
        return self

    def release(self) -> None:
        if self._fd is None:
            self._remove_created()
            return
        try:
            # Unlinked while still locked: a process waiting on this inode sees it is gone.
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        for d in reversed(self._created):  # deepest first; stops at the first non-empty one
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p `path`; the directories it created, outermost first."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CrlDistillError(f"{path}: cannot create the directory "
                              f"({e.strerror or type(e).__name__})") from None
    return missing[::-1]


_scopes: contextvars.ContextVar[tuple[ExitStack, ...]] = contextvars.ContextVar(
    "crl_distill_dirlock_scopes", default=())


def releases_locks(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a writer that calls `hold`: its locks are released when it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with ExitStack() as stack:
            token = _scopes.set((*_scopes.get(), stack))
            try:
                return fn(*args, **kwargs)
            finally:
                _scopes.reset(token)

    return wrapper


def hold(lock_file: str | os.PathLike, what: str) -> DirLock:
    """Lock `lock_file`'s directory until the innermost `@releases_locks` function exits; one
    line naming the holder (`what`: e.g. "teacher run") when another process holds it."""
    scopes = _scopes.get()
    if not scopes:
        raise RuntimeError("dirlock.hold() called outside a @releases_locks function")
    return scopes[-1].enter_context(DirLock(lock_file, what))
