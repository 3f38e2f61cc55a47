"""One writer per workdir: `train` holds an exclusive lock on `<workdir>/lock` while it runs.

Two runs on one workdir would interleave their checkpoints and duplicate or reorder the rows of
`metrics.jsonl`, so a second writer is refused with a message naming the holder's PID and host.

The lock is `flock(2)` on the file (also over NFS, where Linux maps it to a POSIX lock): the
kernel drops it when the holder exits in any way, a crash or SIGKILL included, so a stale lock
can never block a rerun. The file itself stays, holding "PID HOST START" of the run that holds,
or last held, it: a lock that is free while the file still names a run means that run ended
without releasing it (a crash), and the next run takes it over with a warning. The file is
emptied on release, never deleted (deleting it would let two runs lock two different files).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time

log = logging.getLogger(__name__)

LOCK_FILE = "lock"


class WorkdirLockedError(RuntimeError):
    """Another run holds the workdir."""


class WorkdirLock:
    """The held lock of a workdir; `release()` (idempotent) frees it."""

    def __init__(self, path: str, fd: int | None):
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()


def _describe(holder: str) -> str:
    pid, host, start = (holder.split(" ", 2) + ["?", "?", "?"])[:3]
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(start))) if start.replace(".", "").isdigit() \
        else "an unknown time"
    return f"PID {pid} on host {host}, started {since}"


def acquire(workdir: str) -> WorkdirLock:
    """Lock `workdir` (created if missing) for this process; WorkdirLockedError if another run holds it."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder(fd)
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise WorkdirLockedError(
                f"The workdir {workdir} is in use by another run ({_describe(holder)}; lock file {path}). "
                f"Two runs on one workdir would mix their checkpoints and metrics: wait for that run to end or "
                f"stop it, or use another --workdir.") from None
        # A filesystem without locks (ENOLCK, EOPNOTSUPP): say so and go on unprotected.
        log.warning("Cannot lock %s (%s): a second run on this workdir would not be refused.", path, e)
        return WorkdirLock(path, None)
    previous = _holder(fd)
    if previous:
        log.warning("Took over the lock of %s from a run that ended without releasing it (%s): a crash or kill; "
                    "resuming from its newest good checkpoint.", workdir, _describe(previous))
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode())
    os.fsync(fd)
    return WorkdirLock(path, fd)
