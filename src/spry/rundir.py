"""One writer per run directory: `spry run` holds an exclusive lock on RUN_DIR/.lock from
before it reads anything until it exits.

The lock is an `fcntl.flock` on the file, so the kernel releases it whenever the process
ends, however it ends (kill -9 included): a lock file left by a dead process is stale, is
recognised as such (its recorded pid is named in the log) and taken over. A second run on
a directory whose lock is held is refused before it reads or writes anything.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from spry.config import ConfigError

log = logging.getLogger(__name__)

LOCK = ".lock"


class RunLock:
    """`with RunLock(run_dir):` — the directory is made if need be and removed again on
    exit if the run left nothing in it (a run refused for bad input leaves no trace)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK
        self.file = None
        self.made_dir = False

    def __enter__(self) -> "RunLock":
        self.made_dir = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            self.file = open(self.path, "a+")
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(self.file)
                self.file.close()
                self.file = None
                raise ConfigError(
                    f"run_name: {self.dir} is in use by another run (pid "
                    f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                    f"{holder.get('since', '?')}); wait for it to end, or choose another "
                    "run_name or output_dir") from None
            try:  # the holder may have removed the file between our open and our lock
                if os.stat(self.path).st_ino == os.fstat(self.file.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            self.file.close()
        stale = _read(self.file)
        if stale.get("pid"):
            log.info("%s: taking over the stale lock of pid %s on %s (that run ended without "
                     "releasing it)", self.dir, stale["pid"], stale.get("host", "?"))
        self.file.seek(0)
        self.file.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "since": time.strftime("%Y-%m-%d %H:%M:%S")}, self.file)
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.file is None:
            return
        self.path.unlink(missing_ok=True)  # before the unlock: no one else holds it yet
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
        self.file = None
        if self.made_dir:
            try:
                self.dir.rmdir()  # only if empty: the run wrote nothing
            except OSError:
                pass


def _read(file) -> dict:
    file.seek(0)
    try:
        data = json.loads(file.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
