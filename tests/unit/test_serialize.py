"""One reconcile per job at a time, and reading our own writes before the watch shows them."""

from __future__ import annotations

import threading
import time

from rlhf_operator.serialize import OnePerKey, WrittenStatus


def test_calls_during_a_run_fold_into_one_rerun_and_other_keys_run_alongside() -> None:
    serial = OnePerKey()
    started, release = threading.Event(), threading.Event()
    runs: list[tuple[str, bool]] = []
    active: dict[str, int] = {"a": 0}
    overlap = []

    def slow(rerun: bool) -> str:
        active["a"] += 1
        overlap.append(active["a"])
        runs.append(("a", rerun))
        started.set()
        if not rerun:
            release.wait(5)
        active["a"] -= 1
        return "done"

    results: list[str | None] = []
    first = threading.Thread(target=lambda: results.append(serial.run("a", slow)))
    first.start()
    assert started.wait(5)
    # Three more wake-ups while the first runs: none runs now, all owe one re-run.
    assert [serial.run("a", slow) for _ in range(3)] == [None, None, None]
    # Another job is not held up.
    assert serial.run("b", lambda rerun: f"b {rerun}") == "b False"
    release.set()
    first.join(5)
    assert results == ["done"]
    assert runs == [("a", False), ("a", True)]
    assert max(overlap) == 1
    assert serial.busy() == 0


def test_a_failing_run_frees_its_key() -> None:
    serial = OnePerKey()

    def boom(rerun: bool) -> None:
        raise RuntimeError("apiserver down")

    for _ in range(2):
        try:
            serial.run("a", boom)
        except RuntimeError:
            pass
    assert serial.busy() == 0
    assert serial.run("a", lambda rerun: 1) == 1


def test_many_threads_never_run_one_key_twice_at_once() -> None:
    serial = OnePerKey()
    inside = {"now": 0, "most": 0, "runs": 0}
    lock = threading.Lock()

    def work(rerun: bool) -> None:
        with lock:
            inside["now"] += 1
            inside["runs"] += 1
            inside["most"] = max(inside["most"], inside["now"])
        time.sleep(0.002)
        with lock:
            inside["now"] -= 1

    threads = [
        threading.Thread(target=lambda: [serial.run("job", work) for _ in range(20)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert inside["most"] == 1
    assert 1 <= inside["runs"] <= 160
    assert serial.busy() == 0


def _body(version: str, phase: str) -> dict:
    return {
        "metadata": {"name": "j", "resourceVersion": version},
        "spec": {},
        "status": {"phase": phase},
    }


def test_our_write_is_used_until_the_watch_brings_it() -> None:
    written = WrittenStatus()
    key = ("SFTJob", "team", "j")
    stale = _body("10", "Pending")
    assert written.freshest(key, stale) is stale  # nothing written yet

    written.remember(key, _body("11", "Running"))
    seen = written.freshest(key, stale)
    assert seen["status"] == {"phase": "Running"}
    assert seen["metadata"]["resourceVersion"] == "11"
    assert seen["metadata"]["name"] == "j"
    assert stale["status"] == {"phase": "Pending"}  # the caller's body is not changed
    assert len(written) == 1

    caught_up = _body("11", "Running")
    assert written.freshest(key, caught_up) is caught_up
    assert len(written) == 0  # the watch has it: nothing left to remember


def test_a_conflict_or_a_deletion_forgets_the_write() -> None:
    written = WrittenStatus()
    key = ("SFTJob", "team", "j")
    written.remember(key, _body("11", "Running"))
    written.forget(key)
    assert written.freshest(key, _body("12", "Failed"))["status"] == {"phase": "Failed"}
    written.remember(key, _body("13", "Running"))
    written.remember(key, None)  # the job was deleted while we wrote
    assert len(written) == 0
