"""One job per run folder: the main process holds an exclusive lock on `RUN_DIR/.lock` while it trains.

A second job started on the same folder (a supervisor that relaunches while the first still runs, a typo in two
commands) would interleave checkpoints and metrics; it is refused, naming the process that holds the folder. The
lock is an OS file lock (flock), so a job that dies, even by kill -9, releases it with its last file descriptor.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

LOCK_FILE = ".lock"


class RunFolderLock:
    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.handle: Optional[int] = None

    def acquire(self) -> Optional[str]:
        """Take the lock; None on success, else who holds it (for the refusal)."""
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(handle)
            return holder
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        self.handle = handle
        return None

    def release(self) -> None:
        if self.handle is not None:
            os.close(self.handle)  # closing the descriptor releases the lock
            self.handle = None
