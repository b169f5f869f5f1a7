"""The real node itself, as a pod meets it: the scheduler weighs requests and node selectors,
a dynamically provisioned ReadWriteOnce claim is handed to the pod's fsGroup, the root
filesystem is read-only for a non-root user, cluster DNS answers for Services, and the
kubelet reports the container's exit code and termination message."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.cluster

PROBE = r"""
import json, os, socket
answers = {}
answers["kubernetes"] = socket.gethostbyname("kubernetes.default.svc.cluster.local")
try:
    socket.gethostbyname("example.com")
except socket.gaierror as error:
    answers["outside"] = error.errno
with open("/data/probe.txt", "w") as f:
    f.write("written by uid %d" % os.getuid())
stat = os.stat("/data")
answers["claim_group"] = stat.st_gid
answers["groups"] = os.getgroups()
try:
    open("/etc/probe", "w")
except OSError as error:
    answers["root_filesystem"] = error.strerror
with open("/dev/termination-log", "w") as f:
    json.dump(answers, f)
raise SystemExit(3)
"""


def _pod(name: str, image: str, **spec) -> dict:  # type: ignore[no-untyped-def]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                }
            ],
            **spec,
        },
    }


def _kubectl(real_cluster, namespace: str, *args: str, **kwargs):  # type: ignore[no-untyped-def]
    return real_cluster.kube.kubectl(*args, "-n", namespace, **kwargs)


def _wait_pod(real_cluster, namespace, name, predicate, timeout=90):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        pod = json.loads(_kubectl(real_cluster, namespace, "get", "pod", name, "-o", "json").stdout)
        if predicate(pod):
            return pod
        assert time.monotonic() < deadline, json.dumps(pod["status"], indent=1)
        time.sleep(0.3)


def test_the_scheduler_weighs_requests_and_node_selectors(real_cluster, node_namespace) -> None:
    from harness import images

    image = images.reference("operator")
    too_big = _pod("too-big", image)
    too_big["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "64"}}
    elsewhere = _pod("elsewhere", image, nodeSelector={"accelerator": "h100"})
    fits = _pod("fits", image)
    fits["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    for pod in (too_big, elsewhere, fits):
        _kubectl(real_cluster, node_namespace, "apply", "-f", "-", input=json.dumps(pod))

    def unschedulable(pod: dict) -> bool:
        return any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
            for c in pod["status"].get("conditions", [])
        )

    big = _wait_pod(real_cluster, node_namespace, "too-big", unschedulable)
    message = next(c["message"] for c in big["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "Insufficient cpu" in message, message
    other = _wait_pod(real_cluster, node_namespace, "elsewhere", unschedulable)
    message = next(
        c["message"] for c in other["status"]["conditions"] if c["type"] == "PodScheduled"
    )
    assert "node affinity/selector" in message, message
    running = _wait_pod(
        real_cluster, node_namespace, "fits", lambda p: p["status"].get("phase") == "Running"
    )
    assert running["spec"]["nodeName"] == "node-1"


def test_a_hardened_pod_on_a_provisioned_claim_with_dns_and_a_termination_message(
    real_cluster, node_namespace
) -> None:
    from harness import images

    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "scratch"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    pod = _pod(
        "probe",
        images.reference("trainer"),
        securityContext={"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                         "runAsNonRoot": True},
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "scratch"}}],
    )  # fmt: skip
    container = pod["spec"]["containers"][0]
    container.update(
        {
            "command": ["python", "-c", PROBE],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "securityContext": {
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
            "resources": {"limits": {"memory": "512Mi"}},
        }
    )
    _kubectl(real_cluster, node_namespace, "apply", "-f", "-", input=json.dumps(claim))
    _kubectl(real_cluster, node_namespace, "apply", "-f", "-", input=json.dumps(pod))
    done = _wait_pod(
        real_cluster,
        node_namespace,
        "probe",
        lambda p: p["status"].get("phase") in ("Succeeded", "Failed"),
        120,
    )
    [status] = done["status"]["containerStatuses"]
    terminated = status["state"]["terminated"]
    assert terminated["exitCode"] == 3, terminated
    answers = json.loads(terminated["message"])
    service_ip = json.loads(
        real_cluster.kube.kubectl("get", "service", "kubernetes", "-o", "json").stdout
    )["spec"]["clusterIP"]
    assert answers["kubernetes"] == service_ip
    assert answers["outside"] == -2  # EAI_NONAME: no such name, not a timeout
    # The provisioned volume was handed to the pod's fsGroup by the kubelet.
    assert answers["claim_group"] == 1000 and 1000 in answers["groups"], answers
    assert answers["root_filesystem"] == "Read-only file system", answers
    pvc = json.loads(
        _kubectl(real_cluster, node_namespace, "get", "pvc", "scratch", "-o", "json").stdout
    )
    assert pvc["status"]["phase"] == "Bound"
    folder = real_cluster.claim_folder(node_namespace, "scratch")
    assert (folder / "probe.txt").read_text() == "written by uid 1000"
