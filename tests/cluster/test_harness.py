"""The test control plane itself: real apiserver, real controllers, real kubectl/helm."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from harness.kube import KUBE_VERSION, KubeCluster
from harness.waiting import wait_for

pytestmark = pytest.mark.cluster


def get_json(cluster: KubeCluster, *args: str, **kwargs) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json", **kwargs).stdout)


def test_server_version(kube_cluster: KubeCluster) -> None:
    version = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    server = version["serverVersion"]
    assert server["gitVersion"] == KUBE_VERSION
    assert (server["major"], server["minor"]) == ("1", KUBE_VERSION.split(".")[1])


def test_job_controller_creates_pod(kube_cluster: KubeCluster, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}],
                }
            },
        },
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(job))
    job_uid = get_json(kube_cluster, "get", "job", "hello", "-n", namespace)["metadata"]["uid"]

    def pods():
        pods = get_json(kube_cluster, "get", "pods", "-n", namespace, "-l", "job-name=hello")
        return pods["items"]

    (pod,) = wait_for(pods, what="the Job's pod")
    (owner,) = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", "hello", job_uid)
    assert owner["controller"] is True
    # No kubelet and no scheduler: the pod is never bound, so it stays Pending.
    assert pod["status"].get("phase", "Pending") == "Pending"
    assert not pod["spec"].get("nodeName")

    def active() -> int:
        job = get_json(kube_cluster, "get", "job", "hello", "-n", namespace)
        return int(job.get("status", {}).get("active", 0))

    assert wait_for(active, what="the Job's status.active") == 1


def test_garbage_collector_deletes_dependents(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=k=v")
    owner = get_json(kube_cluster, "get", "configmap", "owner", "-n", namespace)
    owner_uid = owner["metadata"]["uid"]
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
        "data": {"k": "v"},
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(dependent))
    kube_cluster.kubectl("get", "configmap", "dependent", "-n", namespace)

    kube_cluster.kubectl("delete", "configmap", "owner", "-n", namespace, "--wait=false")

    def dependent_gone() -> bool:
        res = kube_cluster.kubectl("get", "configmap", "dependent", "-n", namespace, check=False)
        return res.returncode != 0 and "NotFound" in res.stderr

    wait_for(dependent_gone, timeout=90, what="the garbage collector to delete the dependent")


def test_service_account_rbac(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> None:
    k = kube_cluster.kubectl
    k("create", "serviceaccount", "reader", "-n", namespace)
    k("create", "role", "cm-reader", "-n", namespace, "--verb=get", "--resource=configmaps")
    k(
        "create",
        "rolebinding",
        "cm-reader",
        "-n",
        namespace,
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
    )
    k("create", "configmap", "visible", "-n", namespace, "--from-literal=k=v")
    k("create", "secret", "generic", "hidden", "-n", namespace, "--from-literal=k=v")

    kubeconfig = kube_cluster.kubeconfig_for_service_account(
        namespace, "reader", tmp_path / "sa.kubeconfig"
    )
    assert kubeconfig == tmp_path / "sa.kubeconfig"

    whoami = get_json(kube_cluster, "auth", "whoami", kubeconfig=kubeconfig)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"

    # The RBAC authorizer sees new bindings through an informer: allow it a moment.
    def can_get_configmaps() -> bool:
        res = k(
            "auth",
            "can-i",
            "get",
            "configmaps",
            "-n",
            namespace,
            kubeconfig=kubeconfig,
            check=False,
        )
        return res.stdout.strip() == "yes"

    wait_for(can_get_configmaps, timeout=30, what="RBAC to allow get configmaps")
    # No -n: the kubeconfig's context namespace is the ServiceAccount's.
    cm = get_json(kube_cluster, "get", "configmap", "visible", kubeconfig=kubeconfig)
    assert cm["data"] == {"k": "v"}

    res = k("auth", "can-i", "get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert (res.returncode, res.stdout.strip()) == (1, "no")
    res = k("get", "secret", "hidden", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert res.returncode != 0
    assert "Forbidden" in res.stderr and f"system:serviceaccount:{namespace}:reader" in res.stderr
    # Nor anything cluster-scoped or in other namespaces.
    res = k("get", "configmaps", "-n", "default", kubeconfig=kubeconfig, check=False)
    assert res.returncode != 0 and "Forbidden" in res.stderr


def test_client_tools_run(kube_cluster: KubeCluster) -> None:
    client = json.loads(kube_cluster.kubectl("version", "--client", "-o", "json").stdout)
    assert client["clientVersion"]["gitVersion"].startswith("v1.35.")
    helm = kube_cluster.helm("version", "--short").stdout
    assert helm.startswith("v4."), helm


def test_helm_installs_chart(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    kube_cluster.helm("install", "tiny", str(chart), "-n", namespace, "--set", "greeting=hi")
    cm = get_json(kube_cluster, "get", "configmap", "tiny-cm", "-n", namespace)
    assert cm["data"] == {"greeting": "hi"}
    releases = json.loads(kube_cluster.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [r["name"] for r in releases] == ["tiny"]
    kube_cluster.helm("uninstall", "tiny", "-n", namespace)
    res = kube_cluster.kubectl("get", "configmap", "tiny-cm", "-n", namespace, check=False)
    assert res.returncode != 0 and "NotFound" in res.stderr


def test_cluster_lifecycle_cleans_up(kube_cluster: KubeCluster) -> None:
    """A second, short-lived cluster: stop() ends every process and removes its directory.

    (Takes `kube_cluster` only for its skip/fail logic when the binaries are missing.)
    """
    cluster = KubeCluster()
    with pytest.raises(RuntimeError):
        _ = cluster.server  # not started
    with cluster:
        pids = [p.pid for p in cluster._procs.values()]
        workdir = cluster.dir
        assert len(pids) == 3 and workdir is not None and workdir.exists()
        assert cluster.log_dir is not None and (cluster.log_dir / "kube-apiserver.log").exists()
        assert cluster.startup_seconds is not None
    assert not workdir.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    cluster.stop()  # idempotent
