"""How often the operator asks a running trainer for progress. Every status write comes back
as a watch event; the reconcile it wakes must not read progress and write again at once, or
the operator polls the trainer and writes the status as often as the trainer's step moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from rlhf_operator import kube, reconcile
from rlhf_operator.api import KINDS_BY_NAME
from rlhf_operator.reconcile import progress_due
from rlhf_operator.settings import OperatorSettings

from tests.cluster_views import one_job_view
from tests.invalid_manifests import minimal_manifest

SETTINGS = OperatorSettings(recheck_seconds=5.0)
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def _stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def test_progress_is_read_when_there_is_none_or_it_is_half_an_interval_old() -> None:
    assert progress_due({}, SETTINGS, NOW)
    assert progress_due({"progress": {"step": 3}}, SETTINGS, NOW)  # never stamped
    assert not progress_due({"progress": {"lastUpdateTime": _stamp(0)}}, SETTINGS, NOW)
    assert not progress_due({"progress": {"lastUpdateTime": _stamp(2)}}, SETTINGS, NOW)
    assert progress_due({"progress": {"lastUpdateTime": _stamp(2.5)}}, SETTINGS, NOW)
    assert progress_due({"progress": {"lastUpdateTime": _stamp(60)}}, SETTINGS, NOW)
    # A clock behind the stamp (another writer's clock): read rather than wait.
    assert progress_due({"progress": {"lastUpdateTime": _stamp(-30)}}, SETTINGS, NOW)


def _body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = minimal_manifest("SFTJob", "demo")
    manifest["metadata"].update(
        {"namespace": "team", "uid": "1", "generation": 1, "resourceVersion": "1"}
    )
    manifest["spec"]["resources"] = {"gpusPerNode": 0}
    if status is not None:
        manifest["status"] = status
    return manifest


def _running_job() -> tuple[dict[str, Any], dict[str, Any]]:
    owner = [{"kind": "SFTJob", "name": "demo", "uid": "1", "controller": True}]
    batch = {
        "metadata": {"name": "demo-sft", "namespace": "team", "uid": "job-1",
                     "ownerReferences": owner},
        "spec": {"backoffLimit": 0},
        "status": {"active": 1, "startTime": "2026-11-30T11:59:00Z"},
    }  # fmt: skip
    pod = {
        "metadata": {
            "name": "demo-sft-abcde", "namespace": "team", "uid": "pod-1",
            "creationTimestamp": "2026-11-30T11:59:00Z",
            "ownerReferences": [{"kind": "Job", "name": "demo-sft", "uid": "job-1",
                                 "controller": True}],
        },
        "status": {
            "phase": "Running", "podIP": "10.0.0.5",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "trainer", "ready": True, "restartCount": 0,
                                   "state": {"running": {}}}],
        },
    }  # fmt: skip
    return batch, pod


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Status writes and progress reads, recorded; the trainer's step moves on each read."""
    made: dict[str, list] = {"status": [], "reads": []}
    steps = count(10, 10)

    def patch_status(info, namespace, name, status, resource_version=None):  # type: ignore[no-untyped-def]
        made["status"].append(status)
        return {"metadata": {"name": name, "resourceVersion": "2"}, "status": status}

    def read_progress(*args: Any) -> dict[str, Any]:
        made["reads"].append(args)
        return {"progress": {"step": next(steps), "totalSteps": 1000}, "metrics": {}}

    monkeypatch.setattr(kube, "patch_status", patch_status)
    monkeypatch.setattr(kube, "read_progress", read_progress)
    monkeypatch.setattr(kube, "patch_batch_job", lambda *args: None)
    monkeypatch.setattr(kube, "warning_events", lambda *args: [])
    monkeypatch.setattr(kube, "post_event", lambda *args: None)
    reconcile.WRITTEN.forget(("SFTJob", "team", "demo"))
    return made


def test_the_event_of_our_own_status_write_reads_no_progress_and_writes_nothing(api) -> None:
    sft = KINDS_BY_NAME["SFTJob"]
    batch, pod = _running_job()
    view = one_job_view("team", "demo-sft", batch, [pod])
    body = _body({"phase": "Running", "jobName": "demo-sft", "observedGeneration": 1})
    assert reconcile.reconcile(sft, body, SETTINGS, view) == "Running"
    assert len(api["reads"]) == 1 and len(api["status"]) == 1
    written = api["status"][-1]
    assert written["progress"]["step"] == 10 and written["progress"]["lastUpdateTime"]

    # The watch brings our write back: the reconcile it wakes changes nothing.
    for _ in range(3):
        echoed = _body(written)
        assert reconcile.reconcile(sft, echoed, SETTINGS, view) == "Running"
    assert len(api["reads"]) == 1, "progress read again on the echo of our own write"
    assert len(api["status"]) == 1, "status written again on the echo of our own write"
