"""A multi-node job fails and restarts as one group (issue 14 item 4): the pure decision
(groupfailure.py), the status it writes and a reconcile that records the restart before it
deletes the failed Job (API calls recorded, not sent)."""

from __future__ import annotations

from typing import Any

import pytest
from rlhf_operator import cache, kube, reconcile
from rlhf_operator.api import KINDS_BY_NAME, parse_manifest
from rlhf_operator.chaining import Decision
from rlhf_operator.groupfailure import RankFailure, decide, restart_record
from rlhf_operator.runpolicy import job_spec_patch
from rlhf_operator.settings import OperatorSettings
from rlhf_operator.status import observe

from tests.cluster_views import one_job_view
from tests.invalid_manifests import minimal_manifest

T0 = "2026-11-30T08:00:00Z"


def _manifest(nodes: int = 2, backoff_limit: int = 3, status: dict | None = None) -> dict:
    manifest = minimal_manifest("SFTJob", "demo")
    manifest["metadata"].update(
        {"namespace": "team", "uid": "1", "generation": 1, "resourceVersion": "1"}
    )
    manifest["spec"]["resources"] = {"nodes": nodes, "gpusPerNode": 0}
    manifest["spec"]["output"] = {"accessModes": ["ReadWriteMany"]}
    manifest["spec"]["runPolicy"] = {"backoffLimit": backoff_limit}
    if status is not None:
        manifest["status"] = status
    return manifest


def _job(nodes: int = 2, backoff_limit: int = 3) -> Any:
    return parse_manifest(_manifest(nodes, backoff_limit))


def _batch_job(
    uid: str = "job-1", reason: str | None = "BackoffLimitExceeded", message: str = ""
) -> dict[str, Any]:
    conditions = []
    if reason is not None:
        conditions = [{"type": "Failed", "status": "True", "reason": reason, "message": message}]
    return {
        "metadata": {
            "name": "demo-sft",
            "namespace": "team",
            "uid": uid,
            "ownerReferences": [{"kind": "SFTJob", "name": "demo", "uid": "1", "controller": True}],
        },
        "spec": {"backoffLimit": 0},
        "status": {"conditions": conditions},
    }


def _pod(
    rank: int,
    exit_code: int | None,
    finished: str = T0,
    disrupted: bool = False,
    job_uid: str = "job-1",
) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "finishedAt": finished}}
    conditions = [{"type": "PodScheduled", "status": "True"}]
    if disrupted:
        conditions.append(
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
        )
    return {
        "metadata": {
            "name": f"demo-sft-{rank}-abcde",
            "namespace": "team",
            "uid": f"pod-{rank}",
            "creationTimestamp": T0,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(rank)},
            "ownerReferences": [
                {"kind": "Job", "name": "demo-sft", "uid": job_uid, "controller": True}
            ],
        },
        "status": {
            "phase": "Failed" if exit_code else "Running",
            "conditions": conditions,
            "containerStatuses": [{"name": "trainer", "restartCount": 0, "state": state}],
        },
    }


def test_the_first_failing_rank_restarts_the_group_counted_against_the_backoff_limit() -> None:
    # Rank 1 crashed first; rank 0 was stopped (143) by the Job controller afterwards.
    pods = [_pod(0, 143, "2026-11-30T08:00:05Z"), _pod(1, 1, "2026-11-30T08:00:01Z")]
    decision = decide(_job(), {}, _batch_job(), pods)
    assert decision.action == "restart"
    assert decision.failure == RankFailure(rank=1, exit_code=1, disrupted=False)
    assert (decision.restarts, decision.disruption_restarts) == (1, 0)
    assert "rank 1 exited with code 1" in decision.message and "1 of 3" in decision.message
    # The same failed Job, seen again (the status records its uid): not counted twice.
    status = {"restarts": 1, "lastRestart": {"jobUid": "job-1", "message": "rank 1 exited"}}
    again = decide(_job(), status, _batch_job(), pods)
    assert (again.action, again.restarts) == ("replacing", 1)
    # A later Job of the group failing is counted again.
    later = decide(_job(), status, _batch_job(uid="job-2"), [_pod(0, 1, job_uid="job-2")])
    assert (later.action, later.restarts, later.failure.rank) == ("restart", 2, 0)


def test_in_the_same_second_a_rank_killed_by_a_signal_failed_first() -> None:
    """finishedAt has a resolution of a second: rank 1 SIGKILLed (137) and rank 0's
    collective error on the lost peer (1) land in the same one."""
    pods = [_pod(0, 1, T0), _pod(1, 137, T0)]
    assert decide(_job(), {}, _batch_job(), pods).failure == RankFailure(1, 137, False)
    later = [_pod(0, 1, "2026-11-30T07:59:59Z"), _pod(1, 137, T0)]
    assert decide(_job(), {}, _batch_job(), later).failure == RankFailure(0, 1, False)


def test_a_disruption_of_any_rank_restarts_the_group_without_counting() -> None:
    pods = [_pod(0, 143, "2026-11-30T08:00:02Z"), _pod(1, 143, T0, disrupted=True)]
    status = {"restarts": 3}  # every counted restart used: a disruption still restarts
    decision = decide(_job(backoff_limit=3), status, _batch_job(reason="PodFailurePolicy"), pods)
    assert decision.action == "restart" and decision.failure.disrupted
    assert (decision.restarts, decision.disruption_restarts) == (3, 1)


def test_restarts_used_up_fail_the_job_with_the_failing_rank() -> None:
    decision = decide(_job(backoff_limit=1), {"restarts": 1}, _batch_job(), [_pod(1, 137)])
    assert decision.action == "exhausted"
    assert "rank 1 exited with code 137" in decision.message
    assert "runPolicy.backoffLimit 1" in decision.message
    assert decide(_job(backoff_limit=0), {}, _batch_job(), [_pod(1, 1)]).action == "exhausted"


@pytest.mark.parametrize(
    ("batch", "pods"),
    [
        # A user error on any rank is final: the Job's FailJob rule, no restart.
        (_batch_job(reason="PodFailurePolicy"), [_pod(0, 143), _pod(1, 65)]),
        (_batch_job(reason="PodFailurePolicy"), [_pod(0, 78)]),
        # ... also when the pods are gone: the Job controller's message names the rule.
        (
            _batch_job(
                reason="PodFailurePolicy",
                message="Container trainer for pod team/demo-sft-1-x failed with exit code 65"
                " matching FailJob rule at index 0",
            ),
            [],
        ),
        # The deadline (the user's, or the operator's stop for pods that did not start).
        (_batch_job(reason="DeadlineExceeded"), [_pod(1, 1)]),
        # Not failed: running, or rank 0 succeeded (successPolicy).
        (_batch_job(reason=None), [_pod(0, None), _pod(1, None)]),
    ],
)
def test_final_failures_and_running_jobs_are_left_to_the_status(batch: dict, pods: list) -> None:
    assert decide(_job(), {}, batch, pods).action == "nothing"


def test_one_node_jobs_keep_the_jobs_own_retries() -> None:
    assert decide(_job(nodes=1), {}, _batch_job(), [_pod(0, 1)]).action == "nothing"


def test_the_status_says_the_group_restarts_and_why() -> None:
    job = _job()
    pods = [_pod(0, 143, "2026-11-30T08:00:05Z"), _pod(1, 1, "2026-11-30T08:00:01Z")]
    previous = {"phase": "Running", "restarts": 0}
    batch = _batch_job()
    decision = decide(job, previous, batch, pods)
    seen = observe(job, previous, Decision("ready"), batch, pods, None, T0, group=decision)
    status = seen.status
    assert (status["phase"], status["restarts"], status["disruptionRestarts"]) == (
        "Pending",
        1,
        0,
    )
    assert status["lastRestart"] == {
        "jobUid": "job-1",
        "counted": True,
        "time": T0,
        "message": "rank 1 exited with code 1",
        "rank": 1,
        "exitCode": 1,
        "activeSeconds": 0,  # the Job never started
    }
    assert "Failed" not in [c["type"] for c in status["conditions"] if c["status"] == "True"]
    assert [event[:2] for event in seen.events] == [("Warning", "GroupRestarted")]
    # Used up: Failed, reason BackoffLimitExceeded, saying which rank failed.
    exhausted = decide(_job(backoff_limit=1), {"restarts": 1}, batch, pods)
    final = observe(
        job, {"phase": "Running"}, Decision("ready"), batch, pods, None, T0, group=exhausted
    )
    assert final.status["phase"] == "Failed"
    failed = next(c for c in final.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded" and "rank 1" in failed["message"]


def test_the_active_deadline_covers_every_group_attempt() -> None:
    """Each fresh Job starts its own clock: it gets what the earlier groups left."""
    manifest = _manifest()
    manifest["spec"]["runPolicy"] = {"activeDeadlineSeconds": 3600}
    job = parse_manifest(manifest)
    failed = _batch_job()
    failed["status"]["startTime"] = "2026-11-30T07:00:00Z"
    failed["status"]["conditions"][0]["lastTransitionTime"] = "2026-11-30T07:40:00Z"
    decision = decide(job, {}, failed, [_pod(1, 1)])
    earlier = {"lastRestart": {"activeSeconds": 600}}
    record = restart_record(decision, failed, earlier, T0)
    assert record["activeSeconds"] == 600 + 2400
    fresh = {
        "metadata": {"uid": "job-2"},
        "spec": {"activeDeadlineSeconds": 3600, "backoffLimit": 0},
        "status": {},
    }
    used = record["activeSeconds"]
    assert job_spec_patch(job, fresh, False, seconds_used=used) == {"activeDeadlineSeconds": 600}
    assert job_spec_patch(job, fresh, False, seconds_used=4000) == {"activeDeadlineSeconds": 1}


def test_a_user_error_on_one_rank_is_the_jobs_failure_reason() -> None:
    """The failing rank's summary, not the newest pod's (the other rank, stopped)."""
    job = _job()
    failing = _pod(1, 65)
    failing["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = (
        '{"phase": "Failed", "reason": "DataError", "message": "dataset: no rows"}'
    )
    stopped = _pod(0, 143)
    stopped["metadata"]["creationTimestamp"] = "2026-11-30T08:00:09Z"
    stopped["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = "Terminated"
    batch = _batch_job(reason="PodFailurePolicy")
    seen = observe(job, {}, Decision("ready"), batch, [failing, stopped], None, T0)
    failed = next(c for c in seen.status["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == ("DataError", "dataset: no rows")


# --- reconcile: recorded, then deleted; the fresh Job waits for the old pods -------------


def _view(batch: dict | None, pods: list[dict]) -> cache.ClusterView:
    return one_job_view("team", "demo-sft", batch, pods)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    made: list[tuple] = []

    def patch_status(info, namespace, name, status, resource_version=None):  # type: ignore[no-untyped-def]
        made.append(("status", status))
        return {"metadata": {"name": name, "resourceVersion": "2"}, "status": status}

    monkeypatch.setattr(kube, "patch_status", patch_status)
    monkeypatch.setattr(kube, "patch_batch_job", lambda *args: made.append(("patch", args)))
    monkeypatch.setattr(kube, "delete_batch_job", lambda *args: made.append(("delete", args)))
    monkeypatch.setattr(kube, "warning_events", lambda *args: [])
    monkeypatch.setattr(kube, "post_event", lambda *args: made.append(("event", args[2:4])))
    monkeypatch.setattr(kube, "create", lambda body: made.append(("create", body["kind"])) or body)
    monkeypatch.setattr(kube, "read_progress", lambda *args: None)
    monkeypatch.setattr(kube, "get_batch_job", lambda *args: None)  # gone
    reconcile.WRITTEN.forget(("SFTJob", "team", "demo"))
    return made


def test_reconcile_records_the_restart_then_deletes_the_failed_job_once(calls: list) -> None:
    sft = KINDS_BY_NAME["SFTJob"]
    pods = [_pod(0, 143, "2026-11-30T08:00:05Z"), _pod(1, 1, "2026-11-30T08:00:01Z")]
    body = _manifest(status={"phase": "Running", "jobName": "demo-sft"})
    assert (
        reconcile.reconcile(sft, body, OperatorSettings(), _view(_batch_job(), pods)) == "Pending"
    )
    kinds = [call[0] for call in calls]
    assert kinds.index("status") < kinds.index("delete")  # recorded, then carried out
    assert ("delete", ("team", "demo-sft", "job-1")) in calls
    assert ("event", ("Warning", "GroupRestarted")) in calls
    status = next(call[1] for call in calls if call[0] == "status")
    assert status["restarts"] == 1 and status["lastRestart"]["jobUid"] == "job-1"

    # The Job being deleted (foreground: its pods go first) is not counted again.
    calls.clear()
    going = _batch_job()
    going["metadata"]["deletionTimestamp"] = T0
    again = _manifest(status=status)
    assert reconcile.reconcile(sft, again, OperatorSettings(), _view(going, pods)) == "Pending"
    assert not [call for call in calls if call[0] in ("delete", "event", "create")]
    assert all(call[1]["restarts"] == 1 for call in calls if call[0] == "status")

    # Gone, but a pod of it still terminating: nothing is created, the status says why.
    calls.clear()
    reconcile.WRITTEN.forget(("SFTJob", "team", "demo"))
    terminating = _pod(1, 1)
    terminating["metadata"]["deletionTimestamp"] = T0
    reconcile.reconcile(sft, again, OperatorSettings(), _view(None, [terminating]))
    assert ("create", "Job") not in calls
    written = [call[1] for call in calls if call[0] == "status"]
    assert written and written[-1]["phase"] == "Pending"
    assert "replacing every pod of the group" in written[-1]["message"]
    waiting = next(c for c in written[-1]["conditions"] if c["type"] == "Waiting")
    assert waiting["status"] == "False"  # not waiting for an upstream: restarting

    # Gone with its pods: a fresh Job, which resumes from the checkpoint.
    calls.clear()
    reconcile.reconcile(sft, again, OperatorSettings(), _view(None, []))
    assert ("create", "Job") in calls
