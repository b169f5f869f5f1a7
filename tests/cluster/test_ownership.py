"""The operator against the real apiserver, controller-manager and garbage collector (no
kubelet: pods stay Pending): leftovers of an earlier job of the same name are waited
for, never adopted (issue 14, item 1); a finished job is never trained again (item 2);
runPolicy edits reach the Job (item 3).

With no kubelet a Job never finishes by itself: the tests finish one by hand as the job
controller would (a Complete condition with SuccessCriteriaMet, a succeeded count, start
and completion times on the status subresource) while it is suspended, so it has no pods.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
HOLD = "test.rlhf.dev/hold"


def _sft(name: str = "x", **run_policy: object) -> dict:
    job = yaml.safe_load((ROOT / "examples" / "smoke" / "sftjob.yaml").read_text())
    job["metadata"]["name"] = name
    job["spec"]["runPolicy"] = {**job["spec"].get("runPolicy", {}), **run_policy}
    return job


class Cluster:
    def __init__(self, cluster, namespace: str, operator) -> None:  # type: ignore[no-untyped-def]
        self.cluster = cluster
        self.namespace = namespace
        self.operator = operator

    def kubectl(self, *args: str, **kwargs):  # type: ignore[no-untyped-def]
        return self.cluster.kubectl(*args, "-n", self.namespace, **kwargs)

    def apply(self, document: dict) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(document))

    def get(self, resource: str, name: str) -> dict | None:
        result = self.kubectl("get", resource, name, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def patch(self, resource: str, name: str, patch: dict, *extra: str):  # type: ignore[no-untyped-def]
        return self.kubectl(
            "patch", resource, name, "--type=merge", "-p", json.dumps(patch), *extra, check=False
        )

    def wait_for(self, what: str, predicate, timeout: float = 60):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.3)
        log = self.operator.log_text()[-3000:]
        raise AssertionError(f"timed out waiting for {what}; operator log:\n{log}")

    def status(self, name: str = "x") -> dict:
        return (self.get("sftjob", name) or {}).get("status") or {}

    def events(self, name: str = "x") -> list[dict]:
        found = self.kubectl(
            "get", "events", "-o", "json", f"--field-selector=involvedObject.name={name}"
        )
        return json.loads(found.stdout)["items"]

    def finish(self, job: str) -> None:
        """Mark a suspended batch Job Complete, as the job controller would."""
        now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        conditions = [
            {
                "type": kind,
                "status": "True",
                "reason": "CompletionsReached",
                "message": "done",
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
            for kind in ("SuccessCriteriaMet", "Complete")
        ]
        status = {
            "startTime": now,
            "completionTime": now,
            "succeeded": 1,
            "active": 0,
            "conditions": conditions,
        }
        result = self.kubectl(
            "patch",
            "job",
            job,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
            check=False,
        )
        assert result.returncode == 0, result.stderr


@pytest.fixture
def cluster(crds_installed, namespace, operator) -> Cluster:  # type: ignore[no-untyped-def]
    return Cluster(crds_installed, namespace, operator)


def _leftover_job(namespace: str, old_uid: str) -> dict:
    """The batch Job an earlier SFTJob "x" left behind: our labels, its owner reference."""
    labels = {
        "app.kubernetes.io/managed-by": "rlhf-operator",
        "rlhf.dev/job": "x",
        "rlhf.dev/kind": "SFTJob",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "x-sft",
            "namespace": namespace,
            "labels": labels,
            "finalizers": [HOLD],
            "ownerReferences": [
                {
                    "apiVersion": "rlhf.dev/v1alpha1",
                    "kind": "SFTJob",
                    "name": "x",
                    "uid": old_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "suspend": True,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "trainer", "image": "old:1"}],
                },
            },
        },
    }


def test_a_recreated_job_waits_for_the_old_jobs_children_and_never_adopts_them(cluster) -> None:
    old_uid = "00000000-0000-0000-0000-0000000000aa"
    # An earlier SFTJob "x" was deleted; its Job (finished: it would read as Succeeded)
    # is being deleted but held by a finalizer, as a slow garbage collector would leave it.
    cluster.apply(_leftover_job(cluster.namespace, old_uid))
    cluster.finish("x-sft")
    cluster.kubectl("delete", "job", "x-sft", "--wait=false")
    # And a ConfigMap of that name belongs to something else altogether.
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "holder"}})
    holder = cluster.get("configmap", "holder")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "x-sft-config",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "holder",
                        "uid": holder["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "data": {"config.json": "{}"},
        }
    )

    cluster.apply(_sft())
    status = cluster.wait_for(
        "the job to wait for the old Job",
        lambda: cluster.status().get("phase") == "Waiting" and cluster.status(),
    )
    waiting = next(c for c in status["conditions"] if c["type"] == "Waiting")
    assert waiting["reason"] == "ChildBeingDeleted"
    assert waiting["message"] == (
        f"Job {cluster.namespace}/x-sft (being deleted, finalizers: {HOLD}) still belongs to a"
        f" deleted SFTJob (uid {old_uid}); waiting for it to go"
    )
    assert "jobName" not in status
    assert any(e["message"] == waiting["message"] for e in cluster.events())
    time.sleep(3)  # several reconciles (the recheck is 1 s here): still waiting
    assert cluster.status()["phase"] == "Waiting"
    job = cluster.get("job", "x-sft")
    assert job["metadata"]["ownerReferences"][0]["uid"] == old_uid  # not adopted

    # The old Job goes: the job waits on for the ConfigMap that is not its own.
    cluster.patch("job", "x-sft", {"metadata": {"finalizers": None}})
    cluster.wait_for(
        "the job to wait for the ConfigMap",
        lambda: "x-sft-config" in cluster.status().get("message", ""),
    )
    message = cluster.status()["message"]
    assert message.startswith(
        f"ConfigMap {cluster.namespace}/x-sft-config belongs to ConfigMap holder"
    ), message
    assert cluster.get("job", "x-sft") is None  # nothing created while a child is not ours
    assert any(e["message"] == message for e in cluster.events())

    # Once it is gone too, the job starts with children of its own.
    cluster.kubectl("delete", "configmap", "x-sft-config")
    created = cluster.wait_for("the new Job", lambda: cluster.get("job", "x-sft"), timeout=30)
    uid = cluster.get("sftjob", "x")["metadata"]["uid"]
    assert created["metadata"]["ownerReferences"][0]["uid"] == uid
    config = cluster.wait_for("the ConfigMap", lambda: cluster.get("configmap", "x-sft-config"))
    assert config["metadata"]["ownerReferences"][0]["uid"] == uid
    cluster.wait_for("phase Pending", lambda: cluster.status().get("phase") == "Pending")
    assert cluster.status()["jobName"] == "x-sft"


def test_a_succeeded_job_is_not_trained_again_after_its_job_is_removed(cluster) -> None:
    # Suspended, so the Job has no pods and can be finished by hand.
    cluster.apply(_sft(suspend=True, ttlSecondsAfterFinished=0))
    job = cluster.wait_for("the Job", lambda: cluster.get("job", "x-sft"))
    # Until the outcome is recorded, the TTL is not on the Job.
    assert "ttlSecondsAfterFinished" not in job["spec"]
    uid = job["metadata"]["uid"]
    cluster.wait_for("phase Suspended", lambda: cluster.status().get("phase") == "Suspended")
    cluster.finish("x-sft")
    cluster.wait_for("phase Succeeded", lambda: cluster.status().get("phase") == "Succeeded")
    # Recorded: the TTL goes on the Job, and the TTL controller removes it.
    cluster.wait_for("the TTL to remove the Job", lambda: cluster.get("job", "x-sft") is None)

    # A runPolicy edit, then a restart of the operator: no Job again, phase stays.
    result = cluster.patch(
        "sftjob", "x", {"spec": {"runPolicy": {"suspend": False, "backoffLimit": 5}}}
    )
    assert result.returncode == 0, result.stderr
    generation = cluster.get("sftjob", "x")["metadata"]["generation"]
    cluster.wait_for(
        "the edit to be observed",
        lambda: cluster.status().get("observedGeneration") == generation,
    )
    cluster.operator.stop()
    cluster.operator.start()
    time.sleep(5)
    jobs = json.loads(cluster.kubectl("get", "jobs", "-o", "json").stdout)["items"]
    assert [j["metadata"]["uid"] for j in jobs] == []
    status = cluster.status()
    assert status["phase"] == "Succeeded"
    assert status["observedGeneration"] == generation
    assert uid  # the one Job there ever was


def test_run_policy_edits_reach_the_job_and_checkpoint_settings_are_fixed(cluster) -> None:
    cluster.apply(_sft(activeDeadlineSeconds=600, ttlSecondsAfterFinished=60))
    cluster.wait_for("the Job", lambda: cluster.get("job", "x-sft"))
    edit = {"spec": {"runPolicy": {"backoffLimit": 7, "activeDeadlineSeconds": 900}}}
    assert cluster.patch("sftjob", "x", edit).returncode == 0
    job = cluster.wait_for(
        "the edit on the Job",
        lambda: (
            (j := cluster.get("job", "x-sft"))
            and (j["spec"].get("backoffLimit"), j["spec"].get("activeDeadlineSeconds")) == (7, 900)
            and j
        ),
    )
    assert "ttlSecondsAfterFinished" not in job["spec"]  # only once the outcome is recorded
    generation = cluster.get("sftjob", "x")["metadata"]["generation"]
    cluster.wait_for(
        "observedGeneration", lambda: cluster.status().get("observedGeneration") == generation
    )

    # Removing the deadline removes it from the Job.
    assert (
        cluster.patch(
            "sftjob", "x", {"spec": {"runPolicy": {"activeDeadlineSeconds": None}}}
        ).returncode
        == 0
    )
    cluster.wait_for(
        "the deadline to go",
        lambda: (
            "activeDeadlineSeconds" not in (cluster.get("job", "x-sft") or {"spec": {1: 1}})["spec"]
        ),
    )

    # What the trainer reads when it starts is fixed, and the apiserver says how to change it.
    for field, value in (
        ("checkpointInterval", 20),
        ("checkpointsToKeep", 5),
        ("checkpointIntervalMinutes", 1.5),
    ):
        refused = cluster.patch("sftjob", "x", {"spec": {"runPolicy": {field: value}}})
        assert refused.returncode != 0
        assert f"spec.runPolicy.{field}: Forbidden" in refused.stderr, refused.stderr
        assert "delete and re-create the job to change it" in refused.stderr
