"""One run per workdir: an exclusive lock, and who holds it.

``fcntl.flock`` on ``<workdir>/.lock``: the kernel drops it when the holder exits, however
it exits, so a crashed run never leaves the workdir locked. The file also says who holds it
(pid, command, start time, the job running now) for the second run's message and for
``rlhf local status``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

LOCK_FILE = ".lock"


class WorkdirBusy(Exception):
    """Another process runs in this workdir."""

    def __init__(self, workdir: Path, holder: dict[str, Any]) -> None:
        self.holder = holder
        since = time.strftime("%H:%M:%S", time.localtime(holder.get("started", 0)))
        super().__init__(
            f"{workdir} is in use by process {holder.get('pid', '?')}"
            f" ({holder.get('command', 'unknown command')}, since {since});"
            " wait for it to finish, stop it, or use another --workdir"
        )


class WorkdirLock:
    def __init__(self, workdir: Path) -> None:
        self.path = workdir / LOCK_FILE
        self._file: IO[str] | None = None
        self._record: dict[str, Any] = {}

    def __enter__(self) -> WorkdirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise WorkdirBusy(self.path.parent, holder(self.path.parent) or {}) from None
        self._file = handle
        self._record = {
            "pid": os.getpid(),
            "command": " ".join(["rlhf", *sys.argv[1:]]) if sys.argv else "rlhf",
            "started": time.time(),
            "job": None,
        }
        self._write()
        return self

    def running(self, job: str | None) -> None:
        """Record which job runs now (or none)."""
        self._record["job"] = job
        self._write()

    def _write(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(self._record))
        self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def holder(workdir: Path) -> dict[str, Any] | None:
    """Who holds the workdir's lock now, or None when nobody does."""
    path = workdir / LOCK_FILE
    try:
        handle = open(path)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return dict(json.loads(handle.read() or "{}"))
            except ValueError:
                return {}
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None
