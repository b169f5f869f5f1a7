"""The operator on a real node: its Jobs' pods scheduled by kube-scheduler and run by a
kubelet in containers of the trainer image, on claims of a real provisioner. The smoke
pipeline end to end, waiting and failing dependencies, retries that resume, suspension,
restarts of the operator, clean-up."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "examples" / "smoke"


def _smoke(name: str) -> dict:
    return yaml.safe_load((SMOKE / f"{name}.yaml").read_text())


def _long_sft(name: str = "long", steps: int = 1500) -> dict:
    """An SFTJob long enough to interrupt (1500 steps: about 45 s in a container here):
    checkpoints every 50 steps."""
    job = _smoke("sftjob")
    job["metadata"]["name"] = name
    job["spec"]["training"].update({"maxSteps": steps, "batchSize": 4})
    job["spec"]["generation"] = {"samples": 0}
    job["spec"]["runPolicy"] = {"checkpointInterval": 50, "backoffLimit": 2}
    return job


def _checkpoint_appears(pipeline, claim: str, step: int, timeout: float = 240) -> None:  # type: ignore[no-untyped-def]
    """Wait for the checkpoint on the claim (bound once its first pod is scheduled), in the
    job's folder there (``<name>-<stage>``, the claim's name without -output)."""
    deadline = time.monotonic() + timeout
    marker = None
    while marker is None or not marker.exists():
        assert time.monotonic() < deadline, f"no checkpoint-{step} on {claim}"
        try:
            folder = pipeline.claim_folder(claim) / claim.removesuffix("-output")
        except LookupError:
            folder = None
        if folder is not None:
            marker = folder / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
        time.sleep(0.2)


def test_smoke_pipeline_runs_in_order_through_the_real_trainer(pipeline) -> None:
    started = time.monotonic()
    pipeline.apply(SMOKE / "ppojob.yaml", SMOKE / "rewardmodeljob.yaml", SMOKE / "sftjob.yaml")
    applied = time.monotonic()
    job = pipeline.wait_for("job.batch", "smoke-sft-sft", lambda body: True, 30, "the Job")
    created = time.monotonic()
    # Downstream jobs wait, saying for what, and start nothing.
    ppo = pipeline.wait_for_phase("ppojob", "smoke-ppo", "Waiting", 30)
    waiting = next(c for c in ppo["status"]["conditions"] if c["type"] == "Waiting")
    assert waiting["status"] == "True" and waiting["reason"] == "DependencyNotReady"
    assert (
        "SFTJob/smoke-sft" in waiting["message"] and "RewardModelJob/smoke-rm" in waiting["message"]
    )
    assert waiting["observedGeneration"] == ppo["metadata"]["generation"]
    assert pipeline.get("job.batch", "smoke-ppo-ppo") is None

    sft = pipeline.wait_for_phase("sftjob", "smoke-sft", "Succeeded")
    reward = pipeline.wait_for_phase("rewardmodeljob", "smoke-rm", "Succeeded")
    ppo = pipeline.wait_for_phase("ppojob", "smoke-ppo", "Succeeded", 300)
    finished = time.monotonic()
    print(
        f"\napply -> Job created: {created - applied:.2f} s;"
        f" smoke pipeline end to end: {finished - started:.1f} s"
    )

    for body, figure in (
        (sft, "eval_loss"),
        (reward, "eval_accuracy"),
        (ppo, "eval/reward_policy"),
    ):
        status = body["status"]
        stage = {"SFTJob": "sft", "RewardModelJob": "rm", "PPOJob": "ppo"}[body["kind"]]
        assert status["output"]["path"] == f"{body['metadata']['name']}-{stage}/model"
        assert figure in status["metrics"]
        assert status["keyMetric"].startswith(figure)
        assert status["progress"]["percent"] == 100
        assert status["attempts"] == 1 and status["startTime"] <= status["completionTime"]
        succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
        assert succeeded["status"] == "True"
    assert reward["status"]["metrics"]["eval_accuracy"] >= 0.9
    # Kopf keeps no state on the jobs: no finalizer to hang deletion once the operator
    # is gone, no bookkeeping annotations (the operator is level-triggered).
    for body in (sft, reward, ppo):
        assert not body["metadata"].get("finalizers"), body["metadata"]
        assert not any(
            "kopf" in key or key.startswith("rlhf.dev/")
            for key in body["metadata"].get("annotations") or {}
        ), body["metadata"]

    # The PPO pod read the SFT and RM outputs through read-only mounts of their claims.
    ppo_job = pipeline.get("job.batch", "smoke-ppo-ppo")
    volumes = {v["name"]: v for v in ppo_job["spec"]["template"]["spec"]["volumes"]}
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"].get("readOnly")
        for v in volumes.values()
        if "persistentVolumeClaim" in v
    }
    assert claims == {
        "smoke-ppo-ppo-output": None,
        "smoke-sft-sft-output": True,
        "smoke-rm-rm-output": True,
    }
    config = json.loads(pipeline.get("configmap", "smoke-ppo-ppo-config")["data"]["config.json"])
    assert config["paths"]["inputs"] == {
        "policy": "/inputs/policy/smoke-sft-sft/model",
        "rewardModel": "/inputs/rewardModel/smoke-rm-rm/model",
    }
    ppo_output = pipeline.claim_folder("smoke-ppo-ppo-output") / "smoke-ppo-ppo"
    assert (ppo_output / "model" / "COMPLETE").exists()
    assert json.loads((ppo_output / "metrics.json").read_text())["phase"] == "Succeeded"

    table = pipeline.kubectl("get", "sft,rm,ppo", "--no-headers").stdout.splitlines()
    assert all(row.split()[1:3] == ["Succeeded", "100"] for row in table), table
    events = pipeline.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=smoke-ppo", "-o", "json"
    ).stdout
    reasons = [e["reason"] for e in json.loads(events)["items"]]
    assert "DependencyNotReady" in reasons and "TrainingSucceeded" in reasons
    assert reasons.count("DependencyNotReady") == 1
    assert reasons.count("TrainingSucceeded") == 1
    assert job["metadata"]["ownerReferences"][0]["kind"] == "SFTJob"

    metrics = pipeline.operator.metrics()
    assert 'rlhf_operator_jobs{kind="PPOJob",phase="Succeeded"} 1.0' in metrics
    assert "rlhf_operator_reconcile_duration_seconds_count" in metrics
    assert (
        'rlhf_operator_job_duration_seconds_count{kind="SFTJob",phase="Succeeded"} 1.0' in metrics
    )


def test_missing_upstream_waits_and_failed_upstream_fails_downstream(pipeline, tmp_path) -> None:
    reward = _smoke("rewardmodeljob")
    pipeline.apply(reward)
    body = pipeline.wait_for_phase("rewardmodeljob", "smoke-rm", "Waiting", 30)
    waiting = next(c for c in body["status"]["conditions"] if c["type"] == "Waiting")
    assert waiting["reason"] == "DependencyNotFound"
    assert "SFTJob/smoke-sft (it does not exist yet)" in waiting["message"]

    # The upstream exists but its data is malformed: a user error, failed at once.
    pipeline.write_dataset("data", "sft.jsonl", [{"question": "hi", "answer": "there"}])
    sft = _smoke("sftjob")
    sft["spec"]["dataset"] = {
        "pvc": {"claimName": "data", "path": "sft.jsonl"},
        "format": "prompt-completion",
    }
    pipeline.apply(sft)
    failed = pipeline.wait_for_phase("sftjob", "smoke-sft", "Failed", 120)
    condition = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert condition["reason"] == "DataError"
    # The file holds question/answer: the first missing column of prompt-completion is named.
    assert "/inputs/dataset/sft.jsonl" in condition["message"]
    assert "'prompt'" in condition["message"] and "dataset.columns" in condition["message"]
    assert failed["status"]["attempts"] == 1  # the failure policy did not retry a user error
    # The kubelet read the trainer's real exit code and its termination message file, and the
    # Job's podFailurePolicy matched that exit code.
    [pod] = pipeline.pods("batch.kubernetes.io/job-name=smoke-sft-sft")
    [trainer] = pod["status"]["containerStatuses"]
    assert trainer["state"]["terminated"]["exitCode"] == 65, trainer
    assert "'prompt'" in trainer["state"]["terminated"]["message"], trainer
    job = pipeline.get("job.batch", "smoke-sft-sft")
    assert any(c["reason"] == "PodFailurePolicy" for c in job["status"]["conditions"]), job[
        "status"
    ]

    downstream = pipeline.wait_for_phase("rewardmodeljob", "smoke-rm", "Failed", 60)
    condition = next(c for c in downstream["status"]["conditions"] if c["type"] == "Failed")
    assert (
        condition["reason"] == "DependencyFailed"
        and "SFTJob/smoke-sft failed" in condition["message"]
    )
    assert pipeline.get("job.batch", "smoke-rm-rm") is None


def test_a_killed_trainer_is_retried_and_resumes_from_its_checkpoint(pipeline) -> None:
    pipeline.apply(_long_sft())
    _checkpoint_appears(pipeline, "long-sft-output", 50)
    pods = pipeline.running()
    assert len(pods) == 1
    pipeline.kill(pods[0], signal.SIGKILL)
    done = pipeline.wait_for_phase("sftjob", "long", "Succeeded", 300)
    assert done["status"]["attempts"] == 2
    logs = pipeline.kubectl(
        "get", "pods", "-l", "batch.kubernetes.io/job-name=long-sft", "-o", "name"
    ).stdout.split()
    assert len(logs) == 2
    texts = [pipeline.logs(name.split("/")[1]) for name in logs]
    assert sum("resuming from checkpoint-" in text for text in texts) == 1
    assert done["status"]["progress"]["step"] == 1500


def test_an_eviction_is_retried_without_counting_against_the_backoff_limit(pipeline) -> None:
    job = _long_sft("evicted")
    job["spec"]["runPolicy"]["backoffLimit"] = 0
    pipeline.apply(job)
    _checkpoint_appears(pipeline, "evicted-sft-output", 50)
    pipeline.evict(pipeline.running()[0])
    done = pipeline.wait_for_phase("sftjob", "evicted", "Succeeded", 300)
    assert done["status"]["attempts"] == 2


def _set_suspend(pipeline, name: str, suspend: bool) -> None:  # type: ignore[no-untyped-def]
    patch = {"spec": {"runPolicy": {"suspend": suspend}}}
    pipeline.kubectl("patch", "sftjob", name, "--type=merge", "-p", json.dumps(patch))


def test_suspend_stops_the_pods_keeps_checkpoints_and_resume_continues(pipeline) -> None:
    pipeline.apply(_long_sft("paused"))
    _checkpoint_appears(pipeline, "paused-sft-output", 50)
    _set_suspend(pipeline, "paused", True)
    suspended = pipeline.wait_for_phase("sftjob", "paused", "Suspended", 60)
    assert (
        next(c for c in suspended["status"]["conditions"] if c["type"] == "Suspended")["status"]
        == "True"
    )
    deadline = time.monotonic() + 60
    while pipeline.running():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    checkpoints = list(
        (pipeline.claim_folder("paused-sft-output") / "paused-sft" / "checkpoints").glob(
            "checkpoint-*"
        )
    )
    assert checkpoints
    _set_suspend(pipeline, "paused", False)
    done = pipeline.wait_for_phase("sftjob", "paused", "Succeeded", 300)
    assert done["status"]["progress"]["step"] == 1500


def test_operator_restarted_mid_pipeline_creates_no_duplicates_and_finishes(pipeline) -> None:
    pipeline.apply(SMOKE / "sftjob.yaml", SMOKE / "rewardmodeljob.yaml", SMOKE / "ppojob.yaml")
    pipeline.wait_for_phase("sftjob", "smoke-sft", "Running", 120)
    pipeline.operator.stop(signal.SIGKILL)
    time.sleep(1)
    pipeline.operator.start()
    pipeline.wait_for_phase("ppojob", "smoke-ppo", "Succeeded", 300)
    jobs = json.loads(pipeline.kubectl("get", "jobs", "-o", "json").stdout)["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == [
        "smoke-ppo-ppo",
        "smoke-rm-rm",
        "smoke-sft-sft",
    ]
    for kind, name in (
        ("sftjob", "smoke-sft"),
        ("rewardmodeljob", "smoke-rm"),
        ("ppojob", "smoke-ppo"),
    ):
        assert pipeline.get(kind, name)["status"]["attempts"] == 1


def test_deleting_a_job_removes_its_children_unless_the_output_is_retained(pipeline) -> None:
    kept = _smoke("sftjob")
    kept["metadata"]["name"] = "kept"
    kept["spec"]["output"]["retain"] = True
    kept["spec"]["training"]["maxSteps"] = 5
    dropped = json.loads(json.dumps(kept))
    dropped["metadata"]["name"] = "dropped"
    dropped["spec"]["output"]["retain"] = False
    pipeline.apply(kept, dropped)
    pipeline.wait_for_phase("sftjob", "kept", "Succeeded", 200)
    pipeline.wait_for_phase("sftjob", "dropped", "Succeeded", 200)
    pipeline.kubectl("delete", "sftjob", "kept", "dropped", "--wait=true")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        remaining = pipeline.kubectl("get", "jobs,configmaps,pvc", "-o", "name").stdout.split()
        if not any("dropped" in r for r in remaining) and not any(
            "job.batch/kept" in r for r in remaining
        ):
            break
        time.sleep(0.3)
    remaining = pipeline.kubectl("get", "jobs,configmaps,pvc", "-o", "name").stdout.split()
    assert not any("dropped" in item for item in remaining), remaining
    assert "persistentvolumeclaim/kept-sft-output" in remaining
    assert "job.batch/kept-sft" not in remaining and "configmap/kept-sft-config" not in remaining


def test_jobs_carry_no_finalizer_so_they_delete_without_the_operator(pipeline) -> None:
    # A job from an earlier version of the operator still carries Kopf's finalizer and
    # bookkeeping annotation: the operator removes the finalizer.
    old = _smoke("sftjob")
    old["metadata"]["name"] = "from-old-operator"
    old["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    old["spec"]["runPolicy"] = {**old["spec"].get("runPolicy", {}), "suspend": True}
    pipeline.apply(old)
    pipeline.wait_for(
        "sftjob",
        "from-old-operator",
        lambda body: not body["metadata"].get("finalizers"),
        60,
        "the old finalizer to be removed",
    )
    # With the operator stopped, deleting a job still completes (nothing waits for it).
    fresh = _smoke("sftjob")
    fresh["metadata"]["name"] = "deleted-while-down"
    fresh["spec"]["runPolicy"] = {**fresh["spec"].get("runPolicy", {}), "suspend": True}
    pipeline.apply(fresh)
    pipeline.wait_for_phase("sftjob", "deleted-while-down", "Suspended", 60)
    pipeline.operator.stop()
    deleted = pipeline.kubectl(
        "delete", "sftjob", "deleted-while-down", "from-old-operator", "--timeout=30s"
    )
    assert deleted.returncode == 0, deleted.stderr
    assert pipeline.get("sftjob", "deleted-while-down") is None
    pipeline.operator.start()


@pytest.fixture(scope="session")
def kueue(real_cluster):  # type: ignore[no-untyped-def]
    """The real Kueue controller manager, in the node's network namespace like the rest of
    the control plane (tests/harness/kueue.py)."""
    from harness.kueue import Kueue, missing_kueue

    missing = missing_kueue()
    if missing:
        message = f"Kueue missing: {', '.join(missing)}; build it with bash hack/build-kueue.sh"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with Kueue(real_cluster.kube, network=real_cluster.network) as manager:
        print(f"\nkueue up in {manager.startup_seconds:.1f} s")
        yield manager


def _queued(job: dict, queue: str = "team-a") -> dict:
    job["spec"]["queueName"] = queue
    return job


def _pods_of(pipeline, job: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        pod["metadata"]["name"]
        for pod in pipeline.pods(f"batch.kubernetes.io/job-name={job}")
        if pod["status"].get("phase") in ("Pending", "Running")
    ]


def test_kueue_admits_suspends_and_resumes_queued_jobs(pipeline, kueue) -> None:
    """Kueue, not the operator, starts and stops a queued job's Job: with quota for one
    smoke job, the second waits (status says why); suspending the first (Kueue suspends its
    Job: SIGTERM, checkpoint) admits the second; resumed once the second is done, the first
    is admitted again, resumes from its checkpoint and finishes. (The operator used to
    unsuspend the Job by hand here; tests/cluster/test_kueue.py has the waiting while
    another job holds the quota.)"""
    from harness.kueue import queue_objects

    # One smoke job's requests; scratch disk too (ephemeral-storage: Kueue admits nothing
    # that requests a resource the ClusterQueue does not cover).
    quota = {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "2Gi"}
    cluster_queue = f"cq-{pipeline.namespace}"
    objects = queue_objects(pipeline.namespace, "team-a", cluster_queue, quota)
    pipeline.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    try:
        first = _queued(_long_sft("first"))
        pipeline.apply(first)
        pipeline.wait_for_phase("sftjob", "first", "Running", 120)
        assert pipeline.get("job.batch", "first-sft")["spec"]["suspend"] is False

        second = _queued(_smoke("sftjob"))
        second["metadata"]["name"] = "second"
        second["spec"]["training"]["maxSteps"] = 20
        pipeline.apply(second)
        waiting = pipeline.wait_for(
            "sftjob",
            "second",
            lambda b: "insufficient unused quota" in (b.get("status") or {}).get("message", ""),
            60,
            "the second job to wait for quota",
        )
        assert waiting["status"]["phase"] == "Pending"
        assert pipeline.get("job.batch", "second-sft")["spec"]["suspend"] is True

        _checkpoint_appears(pipeline, "first-sft-output", 50)
        _set_suspend(pipeline, "first", True)
        pipeline.wait_for_phase("sftjob", "first", "Suspended", 60)
        assert pipeline.get("job.batch", "first-sft")["spec"]["suspend"] is True
        deadline = time.monotonic() + 150  # the grace period: a checkpoint on SIGTERM
        while _pods_of(pipeline, "first-sft"):
            assert time.monotonic() < deadline, "the first job's pod is still there"
            time.sleep(0.5)
        pipeline.wait_for_phase("sftjob", "second", "Succeeded", 240)

        _set_suspend(pipeline, "first", False)
        done = pipeline.wait_for_phase("sftjob", "first", "Succeeded", 300)
        assert done["status"]["progress"]["step"] == 1500
    finally:
        for kind in ("clusterqueue", "resourceflavor"):
            pipeline.cluster.kubectl("delete", kind, cluster_queue, "--wait=false", check=False)
