"""One reconcile per job at a time, and the status we last wrote until the watch shows it.

Four sources wake a job: its own watch events, its batch Job's, its pods', and timers.
Run side by side, those reconciles read the same status and race to write it; at 500
jobs at once that was about one 409 Conflict (and a re-read) per job
(bench/operator_scale.py). Here a second wake-up while one runs folds into a single
re-run after it, and the re-run starts from the status just written rather than from a
watch event that has not arrived yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

Result = TypeVar("Result")


class OnePerKey:
    """Run work for a key in one thread at a time; calls meanwhile become one re-run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._again: dict[Hashable, bool] = {}

    def run(self, key: Hashable, work: Callable[[bool], Result]) -> Result | None:
        """``work(rerun)``; None when another thread runs it for this key (it will again).

        ``rerun`` is True for the runs owed to calls that arrived during an earlier one:
        their trigger's body is older than what that run wrote, so read a fresh one.
        """
        with self._lock:
            if key in self._again:
                self._again[key] = True
                return None
            self._again[key] = False
        rerun = False
        try:
            while True:
                result = work(rerun)
                with self._lock:
                    if not self._again[key]:
                        del self._again[key]
                        return result
                    self._again[key] = False
                rerun = True
        except BaseException:
            with self._lock:
                self._again.pop(key, None)
            raise

    def busy(self) -> int:
        with self._lock:
            return len(self._again)


class WrittenStatus:
    """The status (and resourceVersion) of our last write to each job, until seen again.

    A body whose resourceVersion is the one we wrote means the watch has caught up and
    the entry goes. Any other body is treated as older than our write: if it is in fact
    newer (someone else wrote), the write with our resourceVersion fails with a 409, the
    caller reads the job again and forgets the entry. So the map is never wrong for
    long, and holds only the jobs written in the last moment.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written: dict[Hashable, tuple[str, dict[str, Any]]] = {}

    def freshest(self, key: Hashable, body: dict[str, Any]) -> dict[str, Any]:
        """``body``, with our last written status and resourceVersion if the body predates it."""
        with self._lock:
            written = self._written.get(key)
            if written is None:
                return body
            resource_version, status = written
            if body.get("metadata", {}).get("resourceVersion") == resource_version:
                del self._written[key]
                return body
        metadata = {**body.get("metadata", {}), "resourceVersion": resource_version}
        return {**body, "metadata": metadata, "status": status}

    def remember(self, key: Hashable, written: dict[str, Any] | None) -> None:
        resource_version = ((written or {}).get("metadata") or {}).get("resourceVersion")
        with self._lock:
            if resource_version:
                self._written[key] = (resource_version, dict(written.get("status") or {}))  # type: ignore[union-attr]
            else:
                self._written.pop(key, None)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._written.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._written)
