# -*- test-case-name: tests.test_startup -*-
"""
One node per data directory: a lock on ``DATA_DIR/node.lock``, held for
the node's life.

The lock is an ``flock`` on the open file, so the kernel drops it when the
process ends, however it ends: a lock left by a killed node never blocks
the next one.  The file holds the PID of the node that holds the lock, for
the message a second node gives.
"""

from __future__ import annotations

import fcntl
import os

from twisted.python.filepath import FilePath

from ..errors import DigitalSpringError

LOCK_FILE_NAME = "node.lock"


class DataDirInUse(DigitalSpringError):
    """
    Another node runs on this data directory: stop it first, or give this
    one a data directory of its own (--data-dir).
    """


class DataDirLock:
    """
    The lock of one data directory, held from :meth:`acquire` until
    :meth:`release` or the end of the process.
    """

    def __init__(self, data_dir: FilePath[str], fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    @property
    def path(self) -> FilePath[str]:
        return self.data_dir.child(LOCK_FILE_NAME)

    @classmethod
    def acquire(cls, data_dir: FilePath[str]) -> DataDirLock:
        """
        Lock ``data_dir`` (which must exist) for this process.

        :raises DataDirInUse: naming the process that holds the lock.
        :raises DigitalSpringError: when the lock file cannot be opened.
        """
        path = data_dir.child(LOCK_FILE_NAME).path
        try:
            # Not truncated on open: the holder's PID stays readable.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise DigitalSpringError(f"cannot open the lock file {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            process = f"process {holder}" if holder.isdigit() else "another process"
            raise DataDirInUse(
                f"another node ({process}) is running on {data_dir.path}; stop it first, "
                "or give this node a data directory of its own (--data-dir)"
            ) from None
        lock = cls(data_dir, fd)
        lock.record_pid()
        return lock

    def record_pid(self) -> None:
        """
        Write this process's PID into the lock file: again after twistd
        daemonizes, since the process that took the lock is then gone (the
        lock itself passes to the daemon with the open file).
        """
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def release(self) -> None:
        """
        Let go of the lock; the file stays, for the next node to lock.
        """
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
