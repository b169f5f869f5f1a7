"""Children are recognised by their owner's uid, never by name alone (issue 14, item 1);
Succeeded and Failed are final (item 2); runPolicy edits reach the Job (item 3).

The decisions are pure (ownership.py, runpolicy.py); the reconcile tests run
``reconcile()`` against an in-memory apiserver stand-in to show the decisions are used.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rlhf_operator import kube, reconcile
from rlhf_operator.api import KINDS_BY_NAME, parse_manifest
from rlhf_operator.api.common import RunPolicy
from rlhf_operator.api.job import FIXED_RUN_POLICY_FIELDS, immutable_field_rules
from rlhf_operator.api.sft import SFTJobSpec
from rlhf_operator.cache import ClusterView, trim_batch_job, trim_pod
from rlhf_operator.chaining import Decision
from rlhf_operator.ownership import (
    BEING_DELETED,
    OWNED_BY_ANOTHER,
    Leftover,
    leftover,
    leftover_pods,
    owner_of,
)
from rlhf_operator.runpolicy import job_spec_patch
from rlhf_operator.settings import OperatorSettings
from rlhf_operator.status import observe

from tests.invalid_manifests import minimal_manifest

UID = "new-uid"
OLD_UID = "old-uid"


def _manifest(spec: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    manifest = minimal_manifest("SFTJob", "x")
    manifest["metadata"].update({"namespace": "team-a", "uid": UID, "generation": generation})
    manifest["spec"].update(spec or {})
    return manifest


def _job(spec: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    return parse_manifest(_manifest(spec))


OWNER = owner_of(_job())


def _child(
    kind: str = "Job",
    name: str = "x-sft",
    owner_uid: str | None = UID,
    owner_kind: str = "SFTJob",
    owner_name: str = "x",
    deleting: bool = False,
    finalizers: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
    finished: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "team-a", "uid": f"{name}-uid"}
    if owner_uid is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "rlhf.dev/v1alpha1",
                "kind": owner_kind,
                "name": owner_name,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-30T05:00:00Z"
    if finalizers:
        metadata["finalizers"] = list(finalizers)
    if labels:
        metadata["labels"] = labels
    body: dict[str, Any] = {"kind": kind, "metadata": metadata, "spec": {}}
    if finished:
        body["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    return body


# --- who owns a child --------------------------------------------------------------------


def test_a_child_controlled_by_this_jobs_uid_is_ours() -> None:
    assert leftover(OWNER, "Job", _child()) is None
    assert leftover(OWNER, "Job", None) is None


def test_a_child_of_an_earlier_job_of_the_same_name_waits_for_the_garbage_collector() -> None:
    found = leftover(OWNER, "Job", _child(owner_uid=OLD_UID))
    assert found == Leftover(
        OWNED_BY_ANOTHER,
        "Job team-a/x-sft still belongs to a deleted SFTJob (uid old-uid);"
        " waiting for the garbage collector",
    )
    # Finished or not: a Job of another run is never read as this job's result.
    assert leftover(OWNER, "Job", _child(owner_uid=OLD_UID, finished=True)) == found


def test_a_child_being_deleted_waits_and_names_what_holds_it() -> None:
    held = leftover(
        OWNER, "Job", _child(owner_uid=OLD_UID, deleting=True, finalizers=("test/hold",))
    )
    assert held is not None and held.reason == BEING_DELETED
    assert held.message == (
        "Job team-a/x-sft (being deleted, finalizers: test/hold) still belongs to a deleted"
        " SFTJob (uid old-uid); waiting for it to go"
    )
    ours = leftover(OWNER, "ConfigMap", _child("ConfigMap", "x-sft-config", deleting=True))
    assert ours == Leftover(
        BEING_DELETED,
        "ConfigMap team-a/x-sft-config (being deleted): waiting for it to go before creating"
        " it again",
    )
    # Our own finished Job, being removed by the TTL controller, still tells its result.
    assert (
        leftover(OWNER, "Job", _child(deleting=True, finished=True), usable_while_deleted=True)
        is None
    )


def test_a_child_of_someone_else_or_of_nobody_is_never_adopted() -> None:
    other = leftover(OWNER, "Service", _child("Service", owner_kind="PPOJob", owner_uid="p"))
    assert other is not None and other.reason == OWNED_BY_ANOTHER
    assert other.message.startswith("Service team-a/x-sft belongs to PPOJob x (uid p)")
    nobody = leftover(OWNER, "ConfigMap", _child("ConfigMap", "x-sft-config", owner_uid=None))
    assert nobody is not None and "no SFTJob owns it" in nobody.message


def test_a_retained_output_claim_is_reused_only_by_a_job_that_retains_its_output() -> None:
    labels = {"rlhf.dev/job": "x", "rlhf.dev/kind": "SFTJob"}
    claim = _child("PersistentVolumeClaim", "x-sft-output", owner_uid=None, labels=labels)
    assert leftover(OWNER, "PersistentVolumeClaim", claim, unowned_is_ours=True) is None
    refused = leftover(OWNER, "PersistentVolumeClaim", claim)
    assert refused is not None and "kept by output.retain" in refused.message
    # A claim someone else labelled differently is not ours even with retain.
    stranger = _child("PersistentVolumeClaim", "x-sft-output", owner_uid=None)
    assert leftover(OWNER, "PersistentVolumeClaim", stranger, unowned_is_ours=True) is not None
    # A retained claim that is going (pods of the old run still use it): wait.
    going = _child("PersistentVolumeClaim", "x-sft-output", None, deleting=True, labels=labels)
    found = leftover(OWNER, "PersistentVolumeClaim", going, unowned_is_ours=True)
    assert found is not None and found.reason == BEING_DELETED


def test_pods_of_an_earlier_job_hold_a_new_one_back() -> None:
    old_pod = _child("Pod", "x-sft-abcde", owner_uid="old-job", owner_kind="Job", deleting=True)
    found = leftover_pods(OWNER, "x-sft", [old_pod], job_uid=None)
    assert found == Leftover(
        BEING_DELETED,
        "Pod team-a/x-sft-abcde of an earlier Job x-sft (uid old-job) is still terminating;"
        " waiting for it to go before starting this job's pods",
    )
    assert leftover_pods(OWNER, "x-sft", [old_pod], job_uid="old-job") is None
    assert leftover_pods(OWNER, "x-sft", [], job_uid=None) is None


def test_the_caches_keep_what_ownership_reads() -> None:
    job = _child(owner_uid=OLD_UID, deleting=True, finalizers=("a/b",))
    job["spec"] = {"backoffLimit": 2, "ttlSecondsAfterFinished": 5, "template": {}}
    trimmed = trim_batch_job(job)
    assert leftover(OWNER, "Job", trimmed) == leftover(OWNER, "Job", job)
    assert trimmed["spec"] == {"backoffLimit": 2, "ttlSecondsAfterFinished": 5}
    pod = _child("Pod", "x-sft-abcde", owner_uid="j", owner_kind="Job", deleting=True)
    assert leftover_pods(OWNER, "x-sft", [trim_pod(pod)], None) == leftover_pods(
        OWNER, "x-sft", [pod], None
    )


def test_a_new_leftover_in_the_way_is_a_new_event() -> None:
    job = _job()
    first = Decision("waiting", OWNED_BY_ANOTHER, "Job team-a/x-sft still belongs to ...")
    seen = observe(job, {}, first, None, [], None, "2026-11-30T05:00:00Z")
    assert seen.status["phase"] == "Waiting"
    assert seen.events == [("Normal", OWNED_BY_ANOTHER, first.message)]
    assert observe(job, seen.status, first, None, [], None).events == []
    second = Decision("waiting", OWNED_BY_ANOTHER, "ConfigMap team-a/x-sft-config belongs ...")
    assert observe(job, seen.status, second, None, [], None).events == [
        ("Normal", OWNED_BY_ANOTHER, second.message)
    ]


# --- runPolicy edits ---------------------------------------------------------------------


def _running_job(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "x-sft", "namespace": "team-a"}, "spec": spec, "status": {}}


def test_every_mutable_run_policy_field_reaches_the_running_job() -> None:
    job = _job({"runPolicy": {"backoffLimit": 7, "activeDeadlineSeconds": 900, "suspend": True}})
    current = _running_job(suspend=False, activeDeadlineSeconds=600, backoffLimit=3)
    assert job_spec_patch(job, current, outcome_recorded=False) == {
        "suspend": True,
        "activeDeadlineSeconds": 900,
        "backoffLimit": 7,
    }
    in_step = _running_job(suspend=True, activeDeadlineSeconds=900, backoffLimit=7)
    assert job_spec_patch(job, in_step, outcome_recorded=False) == {}


def test_a_removed_deadline_is_removed_from_the_job() -> None:
    job = _job({"runPolicy": {}})
    current = _running_job(suspend=False, activeDeadlineSeconds=600, backoffLimit=3)
    assert job_spec_patch(job, current, outcome_recorded=False) == {"activeDeadlineSeconds": None}


def test_the_ttl_reaches_the_job_only_once_its_outcome_is_recorded() -> None:
    job = _job({"runPolicy": {"ttlSecondsAfterFinished": 0}})
    finished = _running_job(suspend=False, backoffLimit=3)
    finished["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert job_spec_patch(job, finished, outcome_recorded=False) == {}
    # Only the TTL: nothing else of a finished Job changes.
    assert job_spec_patch(job, finished, outcome_recorded=True) == {"ttlSecondsAfterFinished": 0}
    # An older operator's TTL on a running Job is taken off until the outcome is known.
    early = _running_job(suspend=False, backoffLimit=3, ttlSecondsAfterFinished=0)
    assert job_spec_patch(job, early, outcome_recorded=False) == {"ttlSecondsAfterFinished": None}


def test_kueue_keeps_suspend_of_a_queued_job() -> None:
    job = _job({"queueName": "team-a"})
    admitted = _running_job(suspend=False, backoffLimit=3)
    assert job_spec_patch(job, admitted, outcome_recorded=False) == {}


def test_checkpoint_settings_are_fixed_by_the_crd() -> None:
    fields = {info.alias for info in RunPolicy.model_fields.values()}
    assert set(FIXED_RUN_POLICY_FIELDS) <= fields
    rules = {rule["fieldPath"]: rule for rule in immutable_field_rules(SFTJobSpec)}
    for field in FIXED_RUN_POLICY_FIELDS:
        rule = rules[f".runPolicy.{field}"]
        assert rule["rule"] == f"self.runPolicy.{field} == oldSelf.runPolicy.{field}"
        assert "delete and re-create the job" in rule["message"]
    # What the operator applies stays editable.
    for field in ("suspend", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"):
        assert f".runPolicy.{field}" not in rules
    assert ".runPolicy" not in rules


# --- reconcile() against an in-memory apiserver ------------------------------------------


class FakeApi:
    """The apiserver as far as one reconcile sees it: objects by (kind, name)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.created: list[tuple[str, str]] = []
        self.statuses: list[dict[str, Any]] = []
        self.job_patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        monkeypatch.setattr(kube, "create", self.create)
        monkeypatch.setattr(kube, "get", lambda kind, ns, name: self.objects.get((kind, name)))
        monkeypatch.setattr(kube, "get_batch_job", lambda ns, name: self.objects.get(("Job", name)))
        monkeypatch.setattr(kube, "patch_status", self.patch_status)
        monkeypatch.setattr(kube, "patch_batch_job", self.patch_batch_job)
        monkeypatch.setattr(
            kube, "post_event", lambda info, body, *event: self.events.append(event)
        )
        monkeypatch.setattr(reconcile, "_progress", lambda pods, settings: None)
        reconcile.WRITTEN.forget(("SFTJob", "team-a", "x"))

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        key = (body["kind"], body["metadata"]["name"])
        if key in self.objects:
            return None
        created = copy.deepcopy(body)
        created["metadata"]["uid"] = f"{key[1]}-uid"
        self.objects[key] = created
        self.created.append(key)
        return created

    def patch_status(self, info, namespace, name, status, resource_version=None):  # type: ignore[no-untyped-def]
        self.statuses.append(status)
        return None

    def patch_batch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.job_patches.append(patch)

    def view(self, pods: list[dict[str, Any]] | None = None) -> ClusterView:
        jobs = {
            ("team-a", name): [trim_batch_job(obj)]
            for (kind, name), obj in self.objects.items()
            if kind == "Job"
        }
        empty: dict[Any, list[Any]] = {}
        return ClusterView(
            batch_jobs=jobs,
            pods={("team-a", "x-sft"): [trim_pod(p) for p in pods or []]},
            training_jobs={kind: empty for kind in KINDS_BY_NAME},
            dependents_by_kind={kind: empty for kind in KINDS_BY_NAME},
        )


SETTINGS = OperatorSettings()
INFO = KINDS_BY_NAME["SFTJob"]


def test_a_reconcile_never_adopts_the_children_of_an_earlier_job(monkeypatch) -> None:
    api = FakeApi(monkeypatch)
    api.objects[("Job", "x-sft")] = _child(owner_uid=OLD_UID, finished=True)
    phase = reconcile.reconcile(INFO, _manifest(), SETTINGS, api.view())
    assert phase == "Waiting"  # not Succeeded on the old run's result
    assert api.created == [] and api.job_patches == []
    assert api.statuses[-1]["conditions"][0]["reason"] == OWNED_BY_ANOTHER
    assert "jobName" not in api.statuses[-1]
    assert api.events == [
        (
            "Normal",
            OWNED_BY_ANOTHER,
            "Job team-a/x-sft still belongs to a deleted SFTJob (uid old-uid);"
            " waiting for the garbage collector",
        )
    ]
    # The old Job is gone, its ConfigMap not yet: a 409 on it is not success.
    del api.objects[("Job", "x-sft")]
    api.objects[("ConfigMap", "x-sft-config")] = _child(
        "ConfigMap", "x-sft-config", owner_uid=OLD_UID, deleting=True
    )
    assert reconcile.reconcile(INFO, _manifest(), SETTINGS, api.view()) == "Waiting"
    assert ("Job", "x-sft") not in api.created
    assert "ConfigMap team-a/x-sft-config (being deleted)" in api.statuses[-1]["message"]
    # Everything gone: the job starts.
    del api.objects[("ConfigMap", "x-sft-config")]
    assert reconcile.reconcile(INFO, _manifest(), SETTINGS, api.view()) == "Pending"
    assert ("Job", "x-sft") in api.created


def test_a_reconcile_waits_for_pods_of_an_earlier_job(monkeypatch) -> None:
    api = FakeApi(monkeypatch)
    pod = _child("Pod", "x-sft-abcde", owner_uid="old-job", owner_kind="Job", deleting=True)
    pod["status"] = {"phase": "Running"}
    assert reconcile.reconcile(INFO, _manifest(), SETTINGS, api.view([pod])) == "Waiting"
    assert api.created == []


def test_a_finished_job_is_never_trained_again(monkeypatch) -> None:
    api = FakeApi(monkeypatch)
    succeeded = _manifest({"runPolicy": {"ttlSecondsAfterFinished": 0}}, generation=2)
    succeeded["status"] = {"phase": "Succeeded", "observedGeneration": 1, "jobName": "x-sft"}
    # The TTL removed the Job; the user then edits runPolicy (generation 2), or the
    # operator restarts: nothing is created, the phase stays, the edit counts as seen.
    for _ in range(2):
        assert (
            reconcile.reconcile(INFO, copy.deepcopy(succeeded), SETTINGS, api.view()) == "Succeeded"
        )
    assert api.created == []
    assert api.statuses[-1]["phase"] == "Succeeded"
    assert api.statuses[-1]["observedGeneration"] == 2
    # A finished Job still there gets the edited TTL.
    api.objects[("Job", "x-sft")] = _child(finished=True)
    reconcile.reconcile(INFO, copy.deepcopy(succeeded), SETTINGS, api.view())
    assert api.job_patches == [{"spec": {"ttlSecondsAfterFinished": 0}}]
    assert api.created == []


def test_the_ttl_is_set_once_the_outcome_is_written(monkeypatch) -> None:
    api = FakeApi(monkeypatch)
    manifest = _manifest({"runPolicy": {"ttlSecondsAfterFinished": 30}})
    manifest["status"] = {"phase": "Running", "jobName": "x-sft", "observedGeneration": 1}
    finished = _child(finished=True)
    finished["spec"] = {"backoffLimit": 3}
    api.objects[("Job", "x-sft")] = finished
    assert reconcile.reconcile(INFO, manifest, SETTINGS, api.view()) == "Succeeded"
    assert api.statuses[-1]["phase"] == "Succeeded"
    assert api.job_patches == [{"spec": {"ttlSecondsAfterFinished": 30}}]


def test_pods_of_another_job_of_the_name_are_not_counted_as_ours(monkeypatch) -> None:
    api = FakeApi(monkeypatch)
    manifest = _manifest()
    manifest["status"] = {"phase": "Pending", "jobName": "x-sft", "observedGeneration": 1}
    ours = _child()
    ours["metadata"]["uid"] = "our-job"
    api.objects[("Job", "x-sft")] = ours
    old = _child("Pod", "x-sft-old", owner_uid="old-job", owner_kind="Job", deleting=True)
    old["status"] = {"phase": "Running"}
    mine = _child("Pod", "x-sft-mine", owner_uid="our-job", owner_kind="Job")
    mine["status"] = {"phase": "Pending"}
    assert reconcile.reconcile(INFO, manifest, SETTINGS, api.view([old, mine])) == "Pending"
    assert api.statuses[-1]["pods"] == ["x-sft-mine"]
