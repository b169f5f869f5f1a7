"""Ready means healthy (issue 14, item 12), read the way tools read it: ``kubectl wait``
on the conditions kstatus (Flux, kpt) and Argo CD's health check (docs/health.md) look at,
with the real operator, apiserver and Job controller. No kubelet: the Job is finished by
hand, as the job controller would."""

from __future__ import annotations

import pytest

from tests.cluster.test_ownership import Cluster, _sft

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(crds_installed, namespace, operator) -> Cluster:  # type: ignore[no-untyped-def]
    return Cluster(crds_installed, namespace, operator)


def _wait(cluster: Cluster, condition: str, timeout: str = "30s") -> None:
    result = cluster.kubectl(
        "wait", "sftjob/x", f"--for=condition={condition}", f"--timeout={timeout}", check=False
    )
    assert result.returncode == 0, result.stderr + cluster.operator.log.read_text()[-2000:]


def _states(cluster: Cluster) -> dict[str, str]:
    found = {c["type"]: c["status"] for c in cluster.status().get("conditions") or []}
    return {kind: found.get(kind, "") for kind in ("Reconciling", "Stalled", "Ready")}


def test_a_job_is_ready_once_trained_not_once_its_children_exist(cluster) -> None:  # type: ignore[no-untyped-def]
    # Suspended, so the Job has no pods and can be finished by hand.
    cluster.apply(_sft(suspend=True))
    cluster.wait_for("the Job", lambda: cluster.get("job", "x-sft"))
    cluster.wait_for("phase Suspended", lambda: cluster.status().get("phase") == "Suspended")
    assert _states(cluster) == {"Reconciling": "False", "Stalled": "False", "Ready": "False"}
    cluster.finish("x-sft")
    _wait(cluster, "Ready")
    status = cluster.status()
    assert status["phase"] == "Succeeded"
    assert _states(cluster) == {"Reconciling": "False", "Stalled": "False", "Ready": "True"}
    assert status["observedGeneration"] == cluster.get("sftjob", "x")["metadata"]["generation"]


def test_a_job_that_cannot_proceed_is_stalled(cluster) -> None:  # type: ignore[no-untyped-def]
    # Its ConfigMap's name is taken by an object nobody owns: a person must act.
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x-sft-config"}})
    cluster.apply(_sft())
    _wait(cluster, "Stalled")
    assert _states(cluster) == {"Reconciling": "False", "Stalled": "True", "Ready": "False"}
    stalled = next(c for c in cluster.status()["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "ChildOwnedByAnother"
    assert "x-sft-config exists and no SFTJob owns it" in stalled["message"]
    # Removed: the job proceeds; its Job and pod exist, nothing is trained: not Ready.
    cluster.kubectl("delete", "configmap", "x-sft-config")
    cluster.wait_for("the Job", lambda: cluster.get("job", "x-sft"))
    _wait(cluster, "Reconciling")
    assert _states(cluster) == {"Reconciling": "True", "Stalled": "False", "Ready": "False"}
