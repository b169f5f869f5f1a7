"""Why a job's pods wait, in its status and Events, and the start deadline (a fake clock:
every timestamp is passed in, nothing sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rlhf_operator import cache, kube, podwait, reconcile
from rlhf_operator.api import KINDS_BY_NAME, parse_manifest
from rlhf_operator.chaining import Decision
from rlhf_operator.settings import OperatorSettings
from rlhf_operator.status import PODS_NOT_STARTED, observe, stops_its_job

from tests.cluster_views import one_job_view
from tests.invalid_manifests import minimal_manifest

START = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
IMAGE = "registry.invalid/nothing:1"
INSUFFICIENT_CPU = (
    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
    "1 No preemption victims found for incoming pod."
)
PULL_FAILED = (
    f'failed to pull and unpack image "{IMAGE}": failed to resolve reference "{IMAGE}": '
    "dial tcp: lookup registry.invalid: no such host"
)


def stamp(seconds: float = 0) -> str:
    """START plus ``seconds``, as the apiserver writes times."""
    return (START + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _job(**run_policy: Any) -> Any:
    manifest = minimal_manifest("SFTJob", "demo")
    manifest["metadata"].update({"namespace": "team", "uid": "1", "generation": 1})
    if run_policy:
        manifest["spec"]["runPolicy"] = run_policy
    return parse_manifest(manifest)


def batch_job(suspend: bool = False, conditions: list[dict[str, Any]] | None = None) -> dict:
    return {
        "metadata": {
            "name": "demo-sft",
            "namespace": "team",
            "uid": "job-uid",
            "ownerReferences": [{"kind": "SFTJob", "name": "demo", "uid": "1", "controller": True}],
        },
        "spec": {"suspend": suspend, "backoffLimit": 3},  # runPolicy's default
        "status": {"startTime": stamp(), "conditions": conditions or []},
    }


def pod(
    phase: str = "Pending",
    scheduled: bool | None = True,
    waiting: tuple[str, str] | None = None,
    name: str = "demo-sft-abcde",
    created: float = 0,
    unschedulable: str | None = None,
    init_waiting: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A pod as the apiserver returns it (the cache trims it: see test_cache.py)."""
    conditions: list[dict[str, Any]] = [{"type": "Initialized", "status": "True"}]
    if unschedulable is not None:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
                "lastTransitionTime": stamp(created),
            }
        )
    elif scheduled:
        conditions.append({"type": "PodScheduled", "status": "True"})
    state: dict[str, Any] = {"running": {"startedAt": stamp(created + 5)}}
    if phase == "Pending":
        reason, message = waiting or ("ContainerCreating", "")
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "qosClass": "Guaranteed",
    }
    if scheduled and unschedulable is None:
        status["containerStatuses"] = [
            {"name": "trainer", "image": IMAGE, "imageID": "", "restartCount": 0, "state": state}
        ]
    if init_waiting is not None:
        status["initContainerStatuses"] = [
            {
                "name": "fetch",
                "image": "busybox:1",
                "restartCount": 0,
                "state": {"waiting": {"reason": init_waiting[0], "message": init_waiting[1]}},
            }
        ]
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"uid-{name}",
            "ownerReferences": [
                {"kind": "Job", "name": "demo-sft", "uid": "job-uid", "controller": True}
            ],
            "creationTimestamp": stamp(created),
            "labels": {"batch.kubernetes.io/job-name": "demo-sft"},
        },
        "spec": {"nodeName": "node-1" if scheduled else None},
        "status": status,
    }


def event(reason: str, message: str, seconds: float = 20, kind: str = "Warning") -> dict:
    return {"type": kind, "reason": reason, "message": message, "lastSeen": stamp(seconds)}


# --- why the pods wait ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_pod", "events", "reason", "says"),
    [
        (pod(unschedulable=INSUFFICIENT_CPU), {}, "Unschedulable", "1 Insufficient cpu"),
        (pod(waiting=("ErrImagePull", PULL_FAILED)), {}, "ErrImagePull", "no such host"),
        (
            pod(waiting=("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"')),
            {},
            "ImagePullBackOff",
            f'Back-off pulling image "{IMAGE}"',
        ),
        (pod(waiting=("InvalidImageName", "bad")), {}, "InvalidImageName", f'image "{IMAGE}"'),
        (
            pod(
                waiting=("CreateContainerConfigError", "couldn't find key token in Secret team/hub")
            ),
            {},
            "CreateContainerConfigError",
            "couldn't find key token in Secret team/hub",
        ),
        (
            pod(init_waiting=("ImagePullBackOff", 'Back-off pulling image "busybox:1"')),
            {},
            "ImagePullBackOff",
            "container fetch",
        ),
        (
            pod(),
            {
                "uid-demo-sft-abcde": [
                    event("FailedScheduling", "old news", seconds=1),
                    event(
                        "FailedMount",
                        'MountVolume.SetUp failed for volume "config" : configmap'
                        ' "demo-sft-config" not found',
                    ),
                ]
            },
            "FailedMount",
            'configmap "demo-sft-config" not found',
        ),
        (
            pod(),
            {
                "uid-demo-sft-abcde": [
                    event(
                        "FailedAttachVolume",
                        'Multi-Attach error for volume "pvc-1" Volume is already used by pod(s)'
                        " other-sft-xyz",
                    )
                ]
            },
            "FailedAttachVolume",
            "Multi-Attach error",
        ),
        (pod(), {}, "ContainerCreating", "creating its containers"),
        (pod(scheduled=False), {}, "NotScheduled", "waiting for a scheduler"),
    ],
)
def test_the_reason_and_message_of_a_waiting_pod(
    the_pod: dict, events: dict, reason: str, says: str
) -> None:
    for seen in (the_pod, cache.trim_pod(the_pod)):  # the same from what the cache keeps
        wait = podwait.why_pods_wait(batch_job(), [seen], events)
        assert wait is not None
        assert wait.reason == reason
        assert says in wait.message and "demo-sft-abcde" in wait.message, wait.message
        assert wait.problem == (reason not in ("ContainerCreating", "NotScheduled"))


def test_image_problems_name_the_image() -> None:
    for reason in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"):
        wait = podwait.why_pods_wait(batch_job(), [pod(waiting=(reason, "it failed"))])
        assert wait is not None and f'image "{IMAGE}": it failed' in wait.message


def test_a_problem_of_any_pod_comes_before_pods_just_starting() -> None:
    pods = [
        pod(name="demo-sft-0-a"),
        pod(name="demo-sft-1-b", unschedulable=INSUFFICIENT_CPU),
        pod("Running", name="demo-sft-2-c"),
    ]
    wait = podwait.why_pods_wait(batch_job(), pods)
    assert wait is not None and wait.reason == "Unschedulable" and "demo-sft-1-b" in wait.message
    assert podwait.why_pods_wait(batch_job(), [pod("Running"), pod("Succeeded")]) is None


def test_a_job_that_made_no_pod_says_why_from_its_events() -> None:
    quota = (
        'Error creating: pods "demo-sft-x" is forbidden: exceeded quota: compute,'
        " requested: requests.cpu=64"
    )
    wait = podwait.why_pods_wait(batch_job(), [], {"job-uid": [event("FailedCreate", quota)]})
    assert wait is not None and wait.reason == "FailedCreate"
    assert wait.message == f"Job demo-sft: {quota}"
    assert podwait.why_pods_wait(batch_job(), []) is None


def test_odd_reasons_and_long_messages_fit_a_condition() -> None:
    wait = podwait.why_pods_wait(batch_job(), [pod(waiting=("2 weird-Reason!", "x" * 5000))])
    assert wait is not None and wait.reason == "weirdReason"
    assert len(wait.message) <= podwait.MESSAGE_LIMIT
    bare: dict[str, Any] = {"metadata": {"name": "p"}, "status": {"phase": "Pending"}}
    assert podwait.why_pods_wait({}, [bare, {}]) is not None  # never a crash


def test_image_pull_retries_are_one_problem() -> None:
    backoff = podwait.PodWait("ImagePullBackOff", "m")
    assert backoff.same_as("ErrImagePull") and backoff.same_as("ImagePullBackOff")
    assert not backoff.same_as("Unschedulable") and not backoff.same_as(None)
    assert podwait.PodWait("ErrImagePull", "m").same_as("ImagePullBackOff")


# --- which Events are read -----------------------------------------------------------


def test_events_are_read_only_for_a_pod_being_created_for_a_while() -> None:
    now = START + timedelta(seconds=podwait.EVENTS_AFTER_SECONDS)
    early = START + timedelta(seconds=podwait.EVENTS_AFTER_SECONDS - 1)
    assert podwait.event_subjects(batch_job(), [pod()], now) == ["uid-demo-sft-abcde"]
    assert podwait.event_subjects(batch_job(), [pod()], early) == []
    # Its status says enough already, or it is not on a node yet, or it runs.
    for seen in (
        pod(waiting=("ErrImagePull", PULL_FAILED)),
        pod(unschedulable=INSUFFICIENT_CPU),
        pod(scheduled=False),
        pod("Running"),
    ):
        assert podwait.event_subjects(batch_job(), [seen], now) == []
    # One at most: the first such pod.
    two = [pod(name="demo-sft-b"), pod(name="demo-sft-a")]
    assert podwait.event_subjects(batch_job(), two, now) == ["uid-demo-sft-a"]
    # A Job that made no pod: its own Events (FailedCreate).
    assert podwait.event_subjects(batch_job(), [], now) == ["job-uid"]
    assert podwait.event_subjects(batch_job(), [], early) == []
    # Nothing for a suspended or finished Job.
    assert podwait.event_subjects(batch_job(suspend=True), [pod()], now) == []
    done = batch_job(conditions=[{"type": "Complete", "status": "True"}])
    assert podwait.event_subjects(done, [pod()], now) == []


# --- status and Events ---------------------------------------------------------------


def _observe(previous: dict, pods: list, seconds: float, events: dict | None = None, **policy):  # type: ignore[no-untyped-def]
    return observe(
        _job(**policy),
        previous,
        Decision("ready"),
        batch_job(),
        [cache.trim_pod(p) for p in pods],
        None,
        stamp(seconds),
        warning_events=events,
    )


def _condition(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_status_and_one_event_carry_why_the_pods_wait() -> None:
    first = _observe({}, [pod(unschedulable=INSUFFICIENT_CPU)], 30)
    status = first.status
    assert status["phase"] == "Pending"
    assert status["message"] == (
        f"waiting for the training pods to start: Unschedulable: pod demo-sft-abcde:"
        f" {INSUFFICIENT_CPU}"
    )
    ready = _condition(status, "PodsReady")
    assert (ready["status"], ready["reason"]) == ("False", "Unschedulable")
    assert "1 Insufficient cpu" in ready["message"]
    assert ("Warning", "Unschedulable", ready["message"]) in first.events

    # The same reason again: no new Event.
    again = _observe(status, [pod(unschedulable=INSUFFICIENT_CPU)], 60)
    assert not [e for e in again.events if e[1] == "Unschedulable"]

    # Scheduled; the image cannot be pulled: a new reason, a new Event naming the image.
    pulling = _observe(again.status, [pod(waiting=("ErrImagePull", PULL_FAILED))], 90)
    assert _condition(pulling.status, "PodsReady")["reason"] == "ErrImagePull"
    assert [e[1] for e in pulling.events] == ["ErrImagePull"]
    assert IMAGE in pulling.events[0][2]
    # The kubelet's back-off between pulls is the same problem: status follows, no Event.
    backoff = _observe(
        pulling.status, [pod(waiting=("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"'))], 95
    )
    assert _condition(backoff.status, "PodsReady")["reason"] == "ImagePullBackOff"
    assert backoff.status["phase"] == "Pending" and IMAGE in backoff.status["message"]
    assert backoff.events == []

    # It runs: PodsReady, and the message no longer talks of waiting.
    running = _observe(backoff.status, [pod("Running")], 120)
    assert running.status["phase"] == "Running"
    ready = _condition(running.status, "PodsReady")
    assert (ready["status"], ready["reason"], ready["message"]) == ("True", "PodsRunning", "")


def test_a_pod_just_being_created_is_no_problem() -> None:
    seen = _observe({}, [pod()], 5)
    assert _condition(seen.status, "PodsReady")["reason"] == "ContainerCreating"
    assert seen.status["message"].startswith("waiting for the training pods to start: pod ")
    assert not [e for e in seen.events if e[0] == "Warning"]


def test_a_multi_node_job_says_which_pod_cannot_start_while_others_run() -> None:
    pods = [pod("Running", name="demo-sft-0-a"), pod(name="demo-sft-1-b", unschedulable="no")]
    seen = _observe({}, pods, 30)
    assert seen.status["phase"] == "Running"
    assert "a pod waits: Unschedulable: pod demo-sft-1-b: no" in seen.status["message"]
    assert _condition(seen.status, "PodsReady")["status"] == "False"


def test_pods_ready_before_the_job_exists_and_once_it_finished() -> None:
    waiting = observe(_job(), {}, Decision("waiting", "DependencyNotReady", "m"), None, [], None)
    assert _condition(waiting.status, "PodsReady")["reason"] == "NotCreated"
    done = batch_job(conditions=[{"type": "Complete", "status": "True"}])
    finished = observe(_job(), {}, Decision("ready"), done, [], None, stamp(100))
    assert finished.status["phase"] == "Succeeded"
    assert _condition(finished.status, "PodsReady")["reason"] == "JobFinished"


# --- the start deadline --------------------------------------------------------------


def test_pods_not_started_by_the_deadline_fail_the_job_saying_why() -> None:
    stuck = [pod(unschedulable=INSUFFICIENT_CPU, created=10)]
    before = _observe({}, stuck, 10 + 599)
    assert before.status["phase"] == "Pending"
    after = _observe(before.status, stuck, 10 + 600)  # the default: 10 minutes
    status = after.status
    assert status["phase"] == "Failed"
    failed = _condition(status, "Failed")
    assert failed["reason"] == PODS_NOT_STARTED
    assert failed["message"] == status["message"]
    assert status["message"].startswith("the training pods did not start within 600 s:")
    assert "Unschedulable" in status["message"] and "1 Insufficient cpu" in status["message"]
    assert status["completionTime"] == stamp(610)
    assert _condition(status, "PodsReady")["reason"] == "Unschedulable"
    assert [(kind, reason) for kind, reason, _ in after.events] == [("Warning", PODS_NOT_STARTED)]
    assert stops_its_job(status)
    # Final: the Job failing next (its pods deleted) changes nothing.
    later = observe(
        _job(),
        status,
        Decision("ready"),
        batch_job(conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]),
        [],
        None,
        stamp(700),
    )
    assert later.status["phase"] == "Failed" and _condition(later.status, "Failed")["reason"] == (
        PODS_NOT_STARTED
    )
    assert later.events == []


def test_the_deadline_is_the_specs_and_counts_from_the_oldest_pod_still_pending() -> None:
    pods = [pod("Running", name="demo-sft-0-a", created=0), pod(name="demo-sft-1-b", created=50)]
    assert _observe({}, pods, 50 + 29, startDeadlineSeconds=30).status["phase"] == "Running"
    assert _observe({}, pods, 50 + 30, startDeadlineSeconds=30).status["phase"] == "Failed"


def test_a_job_that_made_no_pod_counts_from_when_it_started() -> None:
    quota = {"job-uid": [event("FailedCreate", "exceeded quota")]}
    assert _observe({}, [], 19, quota, startDeadlineSeconds=20).status["phase"] == "Pending"
    failed = _observe({}, [], 20, quota, startDeadlineSeconds=20).status
    assert (
        failed["phase"] == "Failed"
        and "FailedCreate: Job demo-sft: exceeded quota" in (failed["message"])
    )


def test_running_finished_suspended_and_queued_jobs_never_hit_the_start_deadline() -> None:
    late = 10_000
    for pods in ([pod("Running")], [pod("Failed")], [pod("Succeeded"), pod("Failed")]):
        assert _observe({}, pods, late).status["phase"] != "Failed"
    for suspended, run_policy in ((True, {"suspend": True}), (True, {})):
        seen = observe(
            _job(**run_policy),
            {},
            Decision("ready"),
            batch_job(suspend=suspended),
            [cache.trim_pod(pod())],
            None,
            stamp(late),
        )
        assert seen.status["phase"] in ("Suspended", "Pending"), seen.status
        assert seen.status["phase"] != "Failed"


def test_the_start_deadline_is_validated() -> None:
    assert _job().spec.run_policy.start_deadline_seconds == 600
    assert _job(startDeadlineSeconds=20).spec.run_policy.start_deadline_seconds == 20


# --- reconcile: the Job of a job failed so is stopped, and Events are read ---------------


def _view(batch: dict | None, pods: list[dict]) -> cache.ClusterView:
    return one_job_view("team", "demo-sft", batch, pods)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """The API calls a reconcile makes, recorded instead of sent."""
    made: dict[str, list] = {"status": [], "patch": [], "events": [], "posted": []}

    def patch_status(info, namespace, name, status, resource_version=None):  # type: ignore[no-untyped-def]
        made["status"].append(status)
        return {"metadata": {"name": name, "resourceVersion": "2"}, "status": status}

    monkeypatch.setattr(kube, "patch_status", patch_status)
    monkeypatch.setattr(
        kube, "patch_batch_job", lambda ns, name, patch: made["patch"].append((name, patch))
    )
    monkeypatch.setattr(
        kube,
        "warning_events",
        lambda ns, uid: made["events"].append(uid) or [event("FailedMount", "no volume")],
    )
    monkeypatch.setattr(kube, "post_event", lambda *args: made["posted"].append(args[2:]))
    reconcile.WRITTEN.forget(("SFTJob", "team", "demo"))
    return made


def _body(status: dict | None = None, **run_policy: Any) -> dict[str, Any]:
    manifest = minimal_manifest("SFTJob", "demo")
    manifest["metadata"].update(
        {"namespace": "team", "uid": "1", "generation": 1, "resourceVersion": "1"}
    )
    if run_policy:
        manifest["spec"]["runPolicy"] = run_policy
    if status is not None:
        manifest["status"] = status
    return manifest


def _ago(seconds: float) -> str:
    when = datetime.now(UTC) - timedelta(seconds=seconds)
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def test_reconcile_fails_a_job_whose_pods_did_not_start_and_stops_its_job(calls: dict) -> None:
    sft = KINDS_BY_NAME["SFTJob"]
    stuck = pod(unschedulable=INSUFFICIENT_CPU)
    stuck["metadata"]["creationTimestamp"] = _ago(30)
    batch = batch_job()
    batch["spec"]["activeDeadlineSeconds"] = 3600
    body = _body(startDeadlineSeconds=20, activeDeadlineSeconds=3600)
    body["status"] = {"jobName": "demo-sft"}
    phase = reconcile.reconcile(sft, body, OperatorSettings(), _view(batch, [stuck]))
    assert phase == "Failed"
    assert stops_its_job(calls["status"][-1])
    # Recorded first, then carried out: the Job fails for good (DeadlineExceeded).
    assert calls["patch"] == [("demo-sft", {"spec": {"activeDeadlineSeconds": 1}})]
    assert ("Warning", PODS_NOT_STARTED) in [posted[:2] for posted in calls["posted"]]

    # Any later reconcile of the failed job stops the Job again until the Job shows it ...
    calls["patch"].clear()
    failed = _body(calls["status"][-1], startDeadlineSeconds=20)
    assert reconcile.reconcile(sft, failed, OperatorSettings(), _view(batch, [stuck])) == "Failed"
    assert calls["patch"] == [("demo-sft", {"spec": {"activeDeadlineSeconds": 1}})]
    # ... and then never touches it: not once it is stopped, nor when runPolicy changes
    # (the runPolicy sync leaves the Job of a finished job alone: no deadline put back).
    calls["patch"].clear()
    stopped = {**batch, "spec": {"activeDeadlineSeconds": 1, "backoffLimit": 3}}
    reconcile.reconcile(sft, failed, OperatorSettings(), _view(stopped, [stuck]))
    dead = batch_job(conditions=[{"type": "Failed", "status": "True"}])
    reconcile.reconcile(sft, failed, OperatorSettings(), _view(dead, []))
    for edit in ({"suspend": True}, {"activeDeadlineSeconds": 7200}, {"backoffLimit": 5}):
        edited = _body(calls["status"][-1], startDeadlineSeconds=20, **edit)
        edited["metadata"]["generation"] = 2
        reconcile.reconcile(sft, edited, OperatorSettings(), _view(stopped, [stuck]))
    assert calls["patch"] == []


def test_reconcile_reads_the_events_of_a_pod_stuck_being_created(calls: dict) -> None:
    sft = KINDS_BY_NAME["SFTJob"]
    creating = pod()
    creating["metadata"]["creationTimestamp"] = _ago(podwait.EVENTS_AFTER_SECONDS + 5)
    body = _body()
    body["status"] = {"jobName": "demo-sft"}
    assert reconcile.reconcile(sft, body, OperatorSettings(), _view(batch_job(), [creating])) == (
        "Pending"
    )
    assert calls["events"] == ["uid-demo-sft-abcde"]
    status = calls["status"][-1]
    assert _condition(status, "PodsReady")["reason"] == "FailedMount"
    assert "no volume" in status["message"]
    assert calls["patch"] == []

    # A pod that just appeared: no Events read.
    calls["events"].clear()
    creating["metadata"]["creationTimestamp"] = _ago(1)
    reconcile.reconcile(sft, _body(status), OperatorSettings(), _view(batch_job(), [creating]))
    assert calls["events"] == []


def test_other_failures_do_not_touch_the_job() -> None:
    assert not stops_its_job({"phase": "Pending"})
    assert not stops_its_job(
        {"phase": "Failed", "conditions": [{"type": "Failed", "reason": "BackoffLimitExceeded"}]}
    )
    assert stops_its_job(
        {"phase": "Failed", "conditions": [{"type": "Failed", "reason": PODS_NOT_STARTED}]}
    )
