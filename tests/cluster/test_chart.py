"""The Helm chart against the real apiserver: install, upgrade, uninstall, and RBAC that
lets the operator do its work and nothing more.

There is no kubelet: the operator's Deployment gets no running pod, so the tests check
the objects, ask the apiserver what the ServiceAccount may do (`kubectl auth can-i`, and
real requests with its token) and run the real `rlhf operator` as that ServiceAccount.
Release names and namespaces are unique per test; the CRDs are cluster-wide and shared
(installing the chart leaves existing, identical CRDs as they are).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.kube import KubeCluster
from harness.pipeline import free_port
from harness.waiting import wait_for

from tests.cluster.conftest import CRD_NAMES, wait_established

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rlhf-operator"
SMOKE_SFT = ROOT / "examples" / "smoke" / "sftjob.yaml"
PEERING_CRDS = ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev")
DASHBOARD_COUNT = len(list((CHART / "dashboards").glob("*.json")))

# A Forbidden answer from RBAC (not, e.g., a namespace being terminated).
RBAC_DENIED = re.compile(r"cannot (get|list|watch|create|update|patch|delete) resource")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def get_json(cluster: KubeCluster, *args: str, **kwargs: Any) -> dict[str, Any]:
    return json.loads(cluster.kubectl(*args, "-o", "json", **kwargs).stdout)


def exists(cluster: KubeCluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, check=False).returncode == 0


def can_i(cluster: KubeCluster, kubeconfig: Path, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    answer = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert answer in ("yes", "no"), f"kubectl auth can-i {args}: {result.stdout}{result.stderr}"
    return answer == "yes"


def may_use_workloads(cluster: KubeCluster, kubeconfig: Path, verb: str, namespace: str) -> bool:
    """Whether the kubeconfig's user may `verb` Kueue's Workloads in `namespace`. Asked with a
    SelfSubjectAccessReview: `kubectl auth can-i` answers "no" for a resource whose CRD is not
    installed (Kueue's need not be)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "verb": verb,
                "group": "kueue.x-k8s.io",
                "resource": "workloads",
                "namespace": namespace,
            }
        },
    }
    answer = cluster.kubectl(
        "create", "-f", "-", "-o", "json", kubeconfig=kubeconfig, input=json.dumps(review)
    )
    return bool(json.loads(answer.stdout)["status"].get("allowed"))


def api_patch(
    cluster: KubeCluster, kubeconfig: Path, path: str, patch: dict[str, Any]
) -> tuple[int, str]:
    """A merge PATCH with the kubeconfig's bearer token: (HTTP status, body)."""
    token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
    return cluster.api_request(
        "PATCH", path, patch, token=token, content_type="application/merge-patch+json", timeout=30
    )


def create_namespaces(cluster: KubeCluster, *names: str) -> None:
    for name in names:
        cluster.kubectl("create", "namespace", name)
    for name in names:
        cluster.wait_for_service_account(name)


def delete_namespaces(cluster: KubeCluster, *names: str) -> None:
    for name in names:
        cluster.kubectl(
            "delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False
        )


def fullname(release: str) -> str:
    return release if "rlhf-operator" in release else f"{release}-rlhf-operator"


class Release:
    """One `helm install` of the chart, uninstalled at the end whatever happens."""

    def __init__(self, cluster: KubeCluster, namespace: str, *values: str) -> None:
        self.cluster = cluster
        self.name = unique("rlhf")
        self.namespace = namespace
        self.fullname = fullname(self.name)
        self.values = list(values)
        self.installed = False

    def install(self) -> subprocess.CompletedProcess[str]:
        result = self.cluster.helm(
            "install", self.name, CHART, "--namespace", self.namespace, "--timeout", "2m",
            *self.values,
        )  # fmt: skip
        self.installed = True
        return result

    def upgrade(self, *values: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.helm(
            "upgrade", self.name, CHART, "--namespace", self.namespace, "--timeout", "2m",
            *self.values, *values,
        )  # fmt: skip

    def uninstall(self) -> None:
        if self.installed:
            self.cluster.helm("uninstall", self.name, "--namespace", self.namespace, "--wait")
            self.installed = False

    def service_account_kubeconfig(self) -> Path:
        return self.cluster.kubeconfig_for_service_account(self.namespace, self.fullname)


@pytest.fixture
def release_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = unique("rlhf-system")
    create_namespaces(kube_cluster, name)
    yield name
    delete_namespaces(kube_cluster, name)


def cluster_peering_values(cluster: KubeCluster) -> list[str]:
    """Another test's operator may own ClusterKopfPeering rlhf-operator: leave it alone."""
    result = cluster.kubectl(
        "get", "clusterkopfpeerings.kopf.dev", "rlhf-operator", "-o", "json", check=False
    )
    if result.returncode != 0:
        return []
    labels = json.loads(result.stdout)["metadata"].get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") == "Helm":
        pytest.skip("another Helm release of the chart owns ClusterKopfPeering rlhf-operator")
    return ["--set", "peering.create=false"]


class Operator:
    """The real `rlhf operator` as a subprocess, with the credentials given."""

    def __init__(self, kubeconfig: Path, log: Path, *namespaces: str) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.namespaces = namespaces
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Operator:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "RLHF_RECHECK_SECONDS": "1",
            "RLHF_TRAINER_IMAGE": "rlhf-trainer:test",
            "RLHF_PEERING_LIFETIME_SECONDS": "10",
        }
        command = [
            sys.executable, "-m", "rlhf_operator.cli", "operator",
            "--metrics-address", "127.0.0.1",
            "--metrics-port", str(free_port()),
            "--health-port", str(free_port()),
        ]  # fmt: skip
        for namespace in self.namespaces:
            command += ["--namespace", namespace]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited:\n{self.text()[-4000:]}")


def assert_operator_reconciles(
    cluster: KubeCluster, operator: Operator, namespace: str, *, peering: list[str]
) -> None:
    """An SFTJob gets its children, status and events from the operator; no 403s."""
    cluster.kubectl("apply", "-n", namespace, "-f", SMOKE_SFT)

    def reconciled() -> dict[str, Any] | None:
        operator.check_alive()
        job = get_json(cluster, "get", "sftjob", "smoke-sft", "-n", namespace)
        status = job.get("status") or {}
        return job if status.get("phase") and status.get("conditions") else None

    try:
        job = wait_for(reconciled, timeout=90, what="the operator to write the SFTJob's status")
        for resource in (
            "configmap/smoke-sft-sft-config",
            "persistentvolumeclaim/smoke-sft-sft-output",
            "job.batch/smoke-sft-sft",
        ):
            wait_for(
                lambda resource=resource: exists(cluster, resource, "-n", namespace),
                what=resource,
            )
        batch = get_json(cluster, "get", "job.batch", "smoke-sft-sft", "-n", namespace)
        assert batch["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]

        def event() -> bool:
            events = get_json(
                cluster,
                "get", "events", "-n", namespace,
                "--field-selector", "involvedObject.kind=SFTJob,involvedObject.name=smoke-sft",
            )  # fmt: skip
            return bool(events["items"])

        wait_for(event, what="an Event on the SFTJob")

        # The keep-alive patch of the peering object (status: {identity: {...}}).
        def keepalive() -> bool:
            found = get_json(cluster, "get", *peering)
            return bool(found.get("status"))

        wait_for(keepalive, what=f"a Kopf keep-alive in {' '.join(peering)}")
    finally:
        log = operator.text()
    assert not RBAC_DENIED.search(log), f"the operator was denied something:\n{log[-6000:]}"
    assert "Not enough permissions" not in log, log[-6000:]


# ------------------------------------------------------------------------------- tests


def test_install_upgrade_uninstall(
    crds_installed: KubeCluster, release_namespace: str, namespace: str, tmp_path: Path
) -> None:
    cluster = crds_installed
    release = Release(cluster, release_namespace, *cluster_peering_values(cluster))
    name = release.fullname
    try:
        started = time.monotonic()
        release.install()
        install_seconds = time.monotonic() - started
        wait_established(cluster, (*CRD_NAMES, *PEERING_CRDS))

        deployment = get_json(cluster, "get", "deployment", name, "-n", release_namespace)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["--metrics-port", "8080", "--health-port", "8081"]
        for resource in ("serviceaccount", "service"):
            suffix = "-metrics" if resource == "service" else ""
            assert exists(cluster, resource, name + suffix, "-n", release_namespace)
        for resource in ("clusterrole", "clusterrolebinding"):
            assert exists(cluster, resource, name)
        dashboards = get_json(
            cluster, "get", "configmaps", "-n", release_namespace, "-l", "grafana_dashboard=1"
        )
        assert len(dashboards["items"]) == DASHBOARD_COUNT
        assert not exists(cluster, "roles", name, "-n", release_namespace)

        # A user's job, from before the upgrade and the uninstall.
        cluster.kubectl("apply", "-n", namespace, "-f", SMOKE_SFT)

        # Cluster-wide RBAC: it can do its work anywhere, but not read Secrets.
        sa = release.service_account_kubeconfig()
        for where in (namespace, release_namespace, "default", "kube-system"):
            assert can_i(cluster, sa, "create", "jobs.batch", "-n", where)
            assert can_i(
                cluster, sa, "patch", "sftjobs.rlhf.dev", "--subresource=status", "-n", where
            )
            assert not can_i(cluster, sa, "get", "secrets", "-n", where)
            assert not can_i(cluster, sa, "list", "secrets", "-n", where)
            assert not can_i(cluster, sa, "create", "pods", "--subresource=exec", "-n", where)
            # Its one delete: a multi-node job's failed Job, to restart the group.
            assert can_i(cluster, sa, "delete", "jobs.batch", "-n", where)
            assert not can_i(cluster, sa, "delete", "pods", "-n", where)
            assert not can_i(cluster, sa, "delete", "sftjobs.rlhf.dev", "-n", where)
            assert not can_i(cluster, sa, "delete", "persistentvolumeclaims", "-n", where)
        assert not can_i(cluster, sa, "list", "secrets", "--all-namespaces")
        assert not can_i(cluster, sa, "watch", "secrets", "--all-namespaces")
        assert can_i(cluster, sa, "patch", "clusterkopfpeerings.kopf.dev")
        for verb, resource in (
            ("create", "clusterroles"),
            ("create", "clusterrolebindings"),
            ("create", "namespaces"),
            ("delete", "namespaces"),
            ("patch", "customresourcedefinitions"),
            ("create", "customresourcedefinitions"),
        ):
            assert not can_i(cluster, sa, verb, resource), (verb, resource)
        denied = cluster.kubectl("get", "secrets", "-n", namespace, kubeconfig=sa, check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

        # The real operator, cluster-wide, as the chart's ServiceAccount.
        if "peering.create=false" not in release.values:
            with Operator(sa, tmp_path / "operator.log") as operator:
                assert_operator_reconciles(
                    cluster,
                    operator,
                    namespace,
                    peering=["clusterkopfpeerings.kopf.dev", "rlhf-operator"],
                )

        # helm upgrade with a changed value.
        release.upgrade("--set", "operator.recheckSeconds=7", "--set", "replicas=2")
        deployment = get_json(cluster, "get", "deployment", name, "-n", release_namespace)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["RLHF_RECHECK_SECONDS"] == "7"
        assert deployment["spec"]["replicas"] == 2
        history = json.loads(
            cluster.helm("history", release.name, "-n", release_namespace, "-o", "json").stdout
        )
        assert [entry["revision"] for entry in history] == [1, 2]
        assert history[-1]["status"] == "deployed"

        started = time.monotonic()
        release.uninstall()
        uninstall_seconds = time.monotonic() - started
        print(f"helm install {install_seconds:.1f}s, uninstall {uninstall_seconds:.1f}s")

        assert not exists(cluster, "deployment", name, "-n", release_namespace)
        assert not exists(cluster, "serviceaccount", name, "-n", release_namespace)
        assert not exists(cluster, "clusterrole", name)
        assert not exists(cluster, "clusterrolebinding", name)
        # Helm never deletes crds/: the CRDs and the user's job survive.
        for crd in (*CRD_NAMES, *PEERING_CRDS):
            assert exists(cluster, "crd", crd), crd
        assert exists(cluster, "sftjob", "smoke-sft", "-n", namespace)
    finally:
        release.uninstall()


def test_rbac_with_watched_namespaces(crds_installed: KubeCluster, tmp_path: Path) -> None:
    cluster = crds_installed
    home, watched, also_watched, other = (
        unique("rlhf-system"),
        unique("team-a"),
        unique("team-b"),
        unique("team-c"),
    )
    create_namespaces(cluster, home, watched, also_watched, other)
    release = Release(cluster, home, "--set", f"watchNamespaces={{{watched},{also_watched}}}")
    try:
        release.install()
        wait_established(cluster, (*CRD_NAMES, *PEERING_CRDS))
        for where in (watched, also_watched):
            assert exists(cluster, "role", release.fullname, "-n", where)
            assert exists(cluster, "rolebinding", release.fullname, "-n", where)
            assert exists(cluster, "kopfpeerings.kopf.dev", "rlhf-operator", "-n", where)
        assert not exists(cluster, "role", release.fullname, "-n", other)
        mine = get_json(
            cluster, "get", "clusterkopfpeerings.kopf.dev",
            "-l", f"app.kubernetes.io/instance={release.name}",
        )  # fmt: skip
        assert mine["items"] == []  # namespaced peering only
        sa = release.service_account_kubeconfig()

        # Allowed, and done for real with the ServiceAccount's token in a watched namespace.
        for where in (watched, also_watched):
            assert can_i(cluster, sa, "create", "jobs.batch", "-n", where)
            assert can_i(cluster, sa, "patch", "jobs.batch", "-n", where)
            assert can_i(
                cluster, sa, "patch", "sftjobs.rlhf.dev", "--subresource=status", "-n", where
            )
            assert can_i(cluster, sa, "watch", "ppojobs.rlhf.dev", "-n", where)
            assert can_i(cluster, sa, "watch", "dpojobs.rlhf.dev", "-n", where)
            assert can_i(
                cluster, sa, "patch", "dpojobs.rlhf.dev", "--subresource=status", "-n", where
            )
            assert can_i(cluster, sa, "list", "pods", "-n", where)
            assert can_i(cluster, sa, "create", "events", "-n", where)
            assert can_i(cluster, sa, "list", "events", "-n", where)
            assert not can_i(cluster, sa, "watch", "events", "-n", where)
            # Kueue's Workloads of queued jobs: watched, and only patched (spec.active).
            for verb in ("list", "watch", "patch"):
                assert may_use_workloads(cluster, sa, verb, where)
            assert not may_use_workloads(cluster, sa, "create", where)
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "made-by-operator", "namespace": watched},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "busybox:1.36"}],
                    }
                },
            },
        }
        cluster.kubectl("create", "-f", "-", input=json.dumps(job), kubeconfig=sa)
        cluster.kubectl(
            "patch", "job.batch", "made-by-operator", "-n", watched, "--type=merge",
            "-p", json.dumps({"spec": {"suspend": False}}), kubeconfig=sa,
        )  # fmt: skip
        assert (
            get_json(cluster, "get", "job.batch", "made-by-operator", "-n", watched)["spec"][
                "suspend"
            ]
            is False
        )
        sft = yaml.safe_load(SMOKE_SFT.read_text())
        sft["metadata"]["name"] = "status-probe"
        cluster.kubectl("apply", "-n", watched, "-f", "-", input=json.dumps(sft))
        # As the operator does it: one PATCH of the status subresource, no GET first
        # (`kubectl patch --subresource=status` would GET it, which the role does not allow).
        path = f"/apis/rlhf.dev/v1alpha1/namespaces/{watched}/sftjobs/status-probe/status"
        code, body = api_patch(cluster, sa, path, {"status": {"phase": "Pending"}})
        assert code == 200, body
        probe = get_json(cluster, "get", "sftjob", "status-probe", "-n", watched)
        assert probe["status"]["phase"] == "Pending"
        # ... but not the spec: status is all it may write besides Kopf's annotations.
        assert not can_i(cluster, sa, "update", "sftjobs.rlhf.dev", "-n", watched)

        # Never: Secrets (here, in its own namespace, elsewhere), exec, cluster writes.
        for where in (watched, also_watched, home, other, "default", "kube-system"):
            assert not can_i(cluster, sa, "get", "secrets", "-n", where), where
            assert not can_i(cluster, sa, "list", "secrets", "-n", where), where
            assert not can_i(cluster, sa, "create", "pods", "--subresource=exec", "-n", where)
            assert not can_i(cluster, sa, "get", "pods", "--subresource=log", "-n", where)
        assert not can_i(cluster, sa, "list", "secrets", "--all-namespaces")
        for verb in ("create", "update", "patch", "delete"):
            for resource in (
                "clusterroles",
                "clusterrolebindings",
                "namespaces",
                "customresourcedefinitions",
                "clusterkopfpeerings.kopf.dev",
                "nodes",
                "persistentvolumes",
                "storageclasses",
                "priorityclasses",
            ):
                assert not can_i(cluster, sa, verb, resource), (verb, resource)
        # Cluster-scoped reads Kopf needs.
        assert can_i(cluster, sa, "watch", "customresourcedefinitions")
        assert can_i(cluster, sa, "list", "namespaces")

        # Nothing at all in a namespace it does not watch (nor its own).
        for where in (other, home):
            for verb, resource in (
                ("get", "sftjobs.rlhf.dev"),
                ("list", "rewardmodeljobs.rlhf.dev"),
                ("patch", "ppojobs.rlhf.dev"),
                ("watch", "dpojobs.rlhf.dev"),
                ("create", "jobs.batch"),
                ("list", "jobs.batch"),
                ("list", "pods"),
                ("create", "configmaps"),
                ("get", "configmaps"),
                ("create", "persistentvolumeclaims"),
                ("create", "services"),
                ("create", "events"),
                ("list", "events"),
                ("patch", "kopfpeerings.kopf.dev"),
            ):
                assert not can_i(cluster, sa, verb, resource, "-n", where), (verb, resource, where)
            assert not may_use_workloads(cluster, sa, "list", where)
            assert not can_i(
                cluster, sa, "patch", "sftjobs.rlhf.dev", "--subresource=status", "-n", where
            )
        cluster.kubectl("apply", "-n", other, "-f", "-", input=json.dumps(sft))
        path = f"/apis/rlhf.dev/v1alpha1/namespaces/{other}/sftjobs/status-probe/status"
        code, body = api_patch(cluster, sa, path, {"status": {"phase": "Failed"}})
        assert code == 403, body
        rules = cluster.kubectl("auth", "can-i", "--list", "-n", other, kubeconfig=sa).stdout
        for word in ("rlhf.dev", "jobs.batch", "pods", "configmaps", "secrets", "events", "*.*"):
            assert not re.search(rf"^{re.escape(word)}\s", rules, re.MULTILINE), rules

        # The real operator does its work in a watched namespace with exactly these rights.
        with Operator(sa, tmp_path / "operator.log", watched, also_watched) as operator:
            assert_operator_reconciles(
                cluster,
                operator,
                watched,
                peering=["kopfpeerings.kopf.dev", "rlhf-operator", "-n", watched],
            )

        release.uninstall()
        for where in (watched, also_watched):
            assert not exists(cluster, "role", release.fullname, "-n", where)
            assert not exists(cluster, "rolebinding", release.fullname, "-n", where)
        assert not exists(cluster, "clusterrole", release.fullname)
        assert exists(cluster, "sftjob", "smoke-sft", "-n", watched)
    finally:
        release.uninstall()
        delete_namespaces(cluster, home, watched, also_watched, other)


def test_values_typo_fails_the_install(crds_installed: KubeCluster, release_namespace: str) -> None:
    result = crds_installed.helm(
        "install", unique("rlhf"), CHART, "--namespace", release_namespace, "--set", "replica=2",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "additional properties 'replica' not allowed" in result.stderr
    deployments = get_json(crds_installed, "get", "deployments", "-n", release_namespace)
    assert deployments["items"] == []
