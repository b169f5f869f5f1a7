"""Failure semantics that only a real kubelet gives: the kernel's OOM killer on a container's
memory limit, SIGTERM and the grace period on suspension, and a deleted job's running pod
going with it. (A data error's real exit code 65 failing the Job through its podFailurePolicy
is checked in test_operator_on_a_node.py.)"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.node.test_operator_on_a_node import _checkpoint_appears, _long_sft

pytestmark = pytest.mark.cluster


def _trainer_terminations(pipeline, job: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """The trainer container's terminated state of every pod of ``job``'s Job (oldest first)."""
    pods = sorted(
        pipeline.pods(f"batch.kubernetes.io/job-name={job}"),
        key=lambda p: p["metadata"]["creationTimestamp"],
    )
    states = []
    for pod in pods:
        for status in pod["status"].get("containerStatuses", []):
            if status["name"] == "trainer" and "terminated" in status["state"]:
                states.append(status["state"]["terminated"])
    return states


def test_an_oom_killed_trainer_is_retried_and_resumes_from_its_checkpoint(pipeline) -> None:
    job = _long_sft("squeezed", steps=1500)
    job["spec"]["resources"]["memory"] = "1500Mi"
    pipeline.apply(job)
    _checkpoint_appears(pipeline, "squeezed-sft-output", 50)
    [pod] = pipeline.running()
    # A memory spike inside the container: a second process allocates until the container's
    # cgroup is full and the kernel's OOM killer picks a victim. The trainer is made its
    # choice (on a real node the biggest process usually is; here the spike may outgrow it).
    trainer = pipeline.node.container_pid(pipeline.namespace, pod)
    Path(f"/proc/{trainer}/oom_score_adj").write_text("1000")
    spike = subprocess.Popen(
        [
            str(pipeline.cluster.tools / "kubectl"),
            f"--kubeconfig={pipeline.cluster.admin_kubeconfig}",
            "exec", "-n", pipeline.namespace, pod, "--",
            "python", "-c",
            "import time\nchunks = []\nwhile True:\n"
            "    chunks.append(bytearray(32 << 20))\n    time.sleep(0.05)",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        done = pipeline.wait_for_phase("sftjob", "squeezed", "Succeeded", 400)
    finally:
        spike.kill()
    first = _trainer_terminations(pipeline, "squeezed-sft")[0]
    assert first["reason"] == "OOMKilled" and first["exitCode"] == 137, first
    assert done["status"]["attempts"] == 2
    retried = [
        p["metadata"]["name"] for p in pipeline.pods("batch.kubernetes.io/job-name=squeezed-sft")
    ]
    assert sum("resuming from checkpoint-" in pipeline.logs(name) for name in retried) == 1
    assert done["status"]["progress"]["step"] == 1500


def test_suspend_sends_sigterm_and_the_trainer_checkpoints_within_the_grace_period(
    pipeline,
) -> None:
    pipeline.apply(_long_sft("graceful", steps=100000))
    _checkpoint_appears(pipeline, "graceful-sft-output", 50)
    # Let it train past the interval checkpoint, then suspend mid-interval.
    body = pipeline.wait_for(
        "sftjob",
        "graceful",
        lambda b: (b.get("status") or {}).get("progress", {}).get("step", 0) % 50 >= 10,
        120,
        "a step between two interval checkpoints",
    )
    seen_step = body["status"]["progress"]["step"]
    [pod] = pipeline.running()
    suspended_at = time.monotonic()
    pipeline.kubectl(
        "patch", "sftjob", "graceful", "--type=merge",
        "-p", json.dumps({"spec": {"runPolicy": {"suspend": True}}}),
    )  # fmt: skip
    pipeline.wait_for_phase("sftjob", "graceful", "Suspended", 60)
    while pipeline.get("pod", pod) is not None:
        assert time.monotonic() - suspended_at < 130, "the pod outlived its grace period"
        time.sleep(0.3)
    stopped_within = time.monotonic() - suspended_at
    checkpoints = pipeline.claim_folder("graceful-sft-output") / "graceful-sft" / "checkpoints"
    steps = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    # The SIGTERM checkpoint is at the step training reached, not at an interval.
    assert steps[-1] > seen_step and steps[-1] % 50 != 0, (steps, seen_step)
    assert stopped_within < 120, stopped_within  # well inside terminationGracePeriodSeconds


def test_deleting_a_running_job_takes_its_pod_with_it(pipeline) -> None:
    pipeline.apply(_long_sft("doomed", steps=100000))
    _checkpoint_appears(pipeline, "doomed-sft-output", 50)
    [pod] = pipeline.running()
    pipeline.kubectl("delete", "sftjob", "doomed", "--wait=false")
    deadline = time.monotonic() + 150
    while pipeline.get("pod", pod) is not None or pipeline.get("job.batch", "doomed-sft"):
        assert time.monotonic() < deadline, pipeline.kubectl("get", "all").stdout
        time.sleep(0.5)
    # The trainer's container is gone from the runtime too, not just from the API.
    with pytest.raises(LookupError):
        pipeline.node.container_pid(pipeline.namespace, pod)
