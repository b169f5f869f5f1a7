"""PodExecutor: real pod lifecycles on the test control plane, judged by the real Job
controller (completion, podFailurePolicy, replacement pods, suspension)."""

from __future__ import annotations

import errno
import functools
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from harness import waiting
from harness.executor import PodExecutor, expand
from harness.kube import KubeCluster

pytestmark = pytest.mark.cluster

IMAGE = "python:3.11-slim"  # never pulled: `python` resolves to the test venv
# Mount points missing on the host get created there (mkdir -p): keep ours in one place.
M = "/mnt/executor-test"


# ----------------------------------------------------------------------------- helpers


# The executor reacts within a poll or two: fail fast, poll often.
wait_for = functools.partial(waiting.wait_for, timeout=20.0, interval=0.1)


def apply(cluster: KubeCluster, namespace: str, *objects: dict[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def pvc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def job(
    name: str,
    code: str,
    *,
    backoff_limit: int = 0,
    pod_failure_policy: dict[str, Any] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    env: list[dict[str, Any]] | None = None,
    args: list[str] | None = None,
    pod_security: dict[str, Any] | None = None,
    container_security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": IMAGE,
        # pod code writes {M} for the mount prefix (also inside its own f-strings)
        "command": ["python", "-c", textwrap.dedent(code).replace("{M}", M)],
        "args": args or [],
        "env": env or [],
        "volumeMounts": mounts or [],
    }
    if container_security:
        container["securityContext"] = container_security
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "containers": [container],
        "volumes": volumes or [],
    }
    if pod_security:
        pod_spec["securityContext"] = pod_security
    spec: dict[str, Any] = {"backoffLimit": backoff_limit, "template": {"spec": pod_spec}}
    if pod_failure_policy:
        spec["podFailurePolicy"] = pod_failure_policy
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def claim_volume(claim: str, name: str | None = None) -> dict[str, Any]:
    return {"name": name or claim, "persistentVolumeClaim": {"claimName": claim}}


@pytest.fixture(scope="module")
def api(kube_cluster: KubeCluster) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(
        config_file=str(kube_cluster.admin_kubeconfig)
    )
    yield client
    client.close()


@pytest.fixture
def executor(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[PodExecutor]:
    with PodExecutor(kube_cluster, tmp_path / "volumes", namespace=namespace) as ex:
        yield ex
    assert ex.running() == []
    assert ex.errors == []


def job_status(api: kubernetes.client.ApiClient, namespace: str, name: str) -> Any:
    return kubernetes.client.BatchV1Api(api).read_namespaced_job_status(name, namespace).status


def job_condition(api: kubernetes.client.ApiClient, namespace: str, name: str, ctype: str) -> Any:
    for cond in job_status(api, namespace, name).conditions or []:
        if cond.type == ctype and cond.status == "True":
            return cond
    return None


def wait_job(
    api: kubernetes.client.ApiClient, namespace: str, name: str, ctype: str, timeout: float = 20
) -> Any:
    def done() -> Any:
        cond = job_condition(api, namespace, name, ctype)
        if cond is None:
            other = "Failed" if ctype != "Failed" else "Complete"
            bad = job_condition(api, namespace, name, other)
            assert bad is None, f"job {name} ended {other}: {bad}"
        return cond

    return wait_for(done, timeout=timeout, what=f"job {name} {ctype}")


def job_pods(api: kubernetes.client.ApiClient, namespace: str, name: str) -> list[Any]:
    pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"job-name={name}"
    )
    return sorted(pods.items, key=lambda p: p.metadata.creation_timestamp)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead already


def terminated(pod: Any) -> Any:
    return pod.status.container_statuses[0].state.terminated


# A pod that sleeps on its first attempt (after saying so) and succeeds on the next one;
# it notes a SIGTERM in the claim before exiting like an unhandled SIGTERM would.
RETRYING = """
    import os, pathlib, signal, sys, time
    state = pathlib.Path(f"{M}/state")
    def on_term(signum, frame):
        (state / "sigterm").write_text(os.environ["POD_NAME"])
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    attempts = state / "attempts"
    n = int(attempts.read_text()) if attempts.exists() else 0
    attempts.write_text(str(n + 1))
    if n == 0:
        (state / "first-running").touch()
        time.sleep(300)
    print("attempt", n + 1, "succeeds")
"""
POD_NAME_ENV = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


# ----------------------------------------------------------------------------- tests


def test_expand_like_the_kubelet() -> None:
    env = {"A": "x", "B": "$(A)"}
    assert expand("$(A)-$(B)", env) == "x-$(A)"  # values are not expanded again
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$$", env) == "$"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$(A", env) == "$(A"
    assert expand("$A $", env) == "$A $"
    assert expand("a$$$(A)b", env) == "a$xb"
    assert expand("$()", env) == "$()"


def test_job_completes_with_volumes_env_and_termination_message(
    kube_cluster: KubeCluster, namespace: str, executor: PodExecutor, api: Any
) -> None:
    code = """
        import json, os, pathlib, socket, sys
        settings = json.loads(pathlib.Path(f"{M}/etc/app/settings.json").read_text())
        report = {
            "greeting": settings["greeting"],
            "other_key_mounted": pathlib.Path(f"{M}/etc/app/other").exists(),
            "token": os.environ["TOKEN"],
            "pod": os.environ["POD_NAME"],
            "namespace": os.environ["NS"],
            "node": os.environ["NODE"],
            "pod_ip": os.environ["POD_IP"],
            "job_label": os.environ["JOB_LABEL"],
            "combined": os.environ["COMBINED"],
            "argv": sys.argv[1:],
            "hostname": socket.gethostname(),
            "cwd": os.getcwd(),
            "home_writable": os.access(os.environ["HOME"], os.W_OK),
            "python": sys.executable,
            "scratch": os.access(f"{M}/scratch", os.W_OK),
            "subpath": pathlib.Path(f"{M}/sub-mounted/token").read_text(),
        }
        pathlib.Path(f"{M}/output/result.json").write_text(json.dumps(report))
        pathlib.Path("/dev/termination-log").write_text("done: " + settings["greeting"])
        print("wrote the report")
    """
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        POD_NAME_ENV,
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {
            "name": "JOB_LABEL",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['job-name']"}},
        },
        {"name": "COMBINED", "value": "$(NS)/$(POD_NAME)"},
    ]
    volumes = [
        {
            "name": "cfg",
            "configMap": {
                "name": "cfg",
                "items": [{"key": "config.json", "path": "settings.json"}],
            },
        },
        {"name": "creds", "secret": {"secretName": "creds"}},
        claim_volume("out"),
        {"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}},
    ]
    mounts = [
        {"name": "cfg", "mountPath": f"{M}/etc/app", "readOnly": True},
        {"name": "out", "mountPath": f"{M}/output"},
        {"name": "scratch", "mountPath": f"{M}/scratch"},
        {"name": "creds", "mountPath": f"{M}/sub-mounted/token", "subPath": "token"},
    ]
    apply(
        kube_cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"config.json": json.dumps({"greeting": "hello"}), "other": "x"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": "s3cret"},
        },
        job(
            "work",
            code,
            env=env,
            volumes=volumes,
            mounts=mounts,
            args=["$(POD_NAME)", "$$(POD_NAME)", "$(UNDEFINED)"],
        ),
    )

    # No PVC yet: the pod is bound but waits, Pending, like a kubelet would.
    def waiting_reason() -> str | None:
        pods = job_pods(api, namespace, "work")
        statuses = pods[0].status.container_statuses if pods else None
        waiting = statuses[0].state.waiting if statuses else None
        return waiting and waiting.message

    message = wait_for(waiting_reason, what="pod waiting for its PVC")
    assert 'persistentvolumeclaim "out" not found' in message
    pod = job_pods(api, namespace, "work")[0]
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name == executor.node_name
    apply(kube_cluster, namespace, pvc("out"))

    wait_job(api, namespace, "work", "Complete")
    pod = job_pods(api, namespace, "work")[0]
    name = pod.metadata.name
    report = json.loads((executor.claim_path(namespace, "out") / "result.json").read_text())
    assert report == {
        "greeting": "hello",
        "other_key_mounted": False,  # items: only the listed key
        "token": "s3cret",
        "pod": name,
        "namespace": namespace,
        "node": executor.node_name,
        "pod_ip": "127.0.0.1",
        "job_label": "work",
        "combined": f"{namespace}/{name}",
        "argv": [name, "$(POD_NAME)", "$(UNDEFINED)"],
        "hostname": name,
        "cwd": "/",
        "home_writable": True,
        "python": report["python"],
        "scratch": True,
        "subpath": "s3cret",
    }
    assert Path(report["python"]).parent == Path(executor.path_prepend[0])
    assert pod.status.phase == "Succeeded"
    assert pod.status.pod_ip == "127.0.0.1"
    assert pod.status.start_time is not None
    state = terminated(pod)
    assert (state.exit_code, state.reason, state.message) == (0, "Completed", "done: hello")
    assert state.started_at <= state.finished_at
    conditions = {c.type: c.status for c in pod.status.conditions}
    assert conditions["PodScheduled"] == "True"
    assert conditions["Ready"] == "False"
    assert "wrote the report" in executor.logs(namespace, name)


def test_pod_failure_policy_fails_job_on_exit_code(
    kube_cluster: KubeCluster, namespace: str, executor: PodExecutor, api: Any
) -> None:
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]},
            }
        ]
    }
    code = """
        import pathlib, sys
        pathlib.Path("/dev/termination-log").write_text("bad config")
        sys.exit(42)
    """
    apply(kube_cluster, namespace, job("bad", code, backoff_limit=3, pod_failure_policy=policy))
    cond = wait_job(api, namespace, "bad", "Failed")
    assert cond.reason == "PodFailurePolicy"
    time.sleep(0.5)  # a replacement would be created right away: there is none
    pods = job_pods(api, namespace, "bad")
    assert len(pods) == 1
    state = terminated(pods[0])
    assert (state.exit_code, state.reason, state.message) == (42, "Error", "bad config")
    assert pods[0].status.phase == "Failed"
    assert job_status(api, namespace, "bad").failed == 1


def test_killed_pod_is_replaced_and_counted(
    kube_cluster: KubeCluster, namespace: str, executor: PodExecutor, api: Any
) -> None:
    apply(
        kube_cluster,
        namespace,
        pvc("state"),
        job(
            "crash",
            RETRYING,
            backoff_limit=2,
            env=[POD_NAME_ENV],
            volumes=[claim_volume("state")],
            mounts=[{"name": "state", "mountPath": f"{M}/state"}],
        ),
    )
    state_dir = executor.claim_path(namespace, "state")
    first = executor.wait_for_pod_phase(namespace, "job-name=crash", "Running")
    wait_for(lambda: (state_dir / "first-running").exists(), what="first attempt running")
    assert executor.running() == [(namespace, first["metadata"]["name"])]
    executor.kill(namespace, first["metadata"]["name"])

    # The Job controller backs off (10 s) before it replaces a failed pod.
    wait_job(api, namespace, "crash", "Complete", timeout=40)
    status = job_status(api, namespace, "crash")
    assert (status.failed, status.succeeded) == (1, 1)
    pods = job_pods(api, namespace, "crash")
    assert [p.status.phase for p in pods] == ["Failed", "Succeeded"]
    state = terminated(pods[0])
    assert (state.exit_code, state.reason) == (137, "Error")
    assert (state_dir / "attempts").read_text() == "2"
    assert not (state_dir / "sigterm").exists()  # SIGKILL: no chance to clean up
    assert "attempt 2 succeeds" in executor.logs(namespace, pods[1].metadata.name)


def test_evicted_pod_is_ignored_by_pod_failure_policy(
    kube_cluster: KubeCluster, namespace: str, executor: PodExecutor, api: Any
) -> None:
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    apply(
        kube_cluster,
        namespace,
        pvc("state"),
        job(
            "evictme",
            RETRYING,
            backoff_limit=0,
            pod_failure_policy=policy,
            env=[POD_NAME_ENV],
            volumes=[claim_volume("state")],
            mounts=[{"name": "state", "mountPath": f"{M}/state"}],
        ),
    )
    state_dir = executor.claim_path(namespace, "state")
    first = executor.wait_for_pod_phase(namespace, "job-name=evictme", "Running")["metadata"]
    wait_for(lambda: (state_dir / "first-running").exists(), what="first attempt running")

    executor.evict(namespace, first["name"])
    assert (state_dir / "sigterm").read_text() == first["name"]
    # Replay the pod's history since it ran: it ended Failed, exit 143 (SIGTERM), with the
    # DisruptionTarget condition the apiserver set; then it was deleted.
    phases, failed = [], None
    for event in kubernetes.watch.Watch().stream(
        kubernetes.client.CoreV1Api(api).list_namespaced_pod,
        namespace,
        field_selector=f"metadata.name={first['name']}",
        resource_version=first["resourceVersion"],
        timeout_seconds=10,
    ):
        pod = event["object"]
        phases.append(pod.status.phase)
        if event["type"] == "DELETED":
            break
        if pod.status.phase == "Failed":
            failed = pod
    assert phases[-1] == "Failed" and "Running" not in phases[phases.index("Failed") :]
    assert failed is not None
    conditions = {c.type: c for c in failed.status.conditions}
    assert conditions["DisruptionTarget"].status == "True"
    assert conditions["DisruptionTarget"].reason == "EvictionByEvictionAPI"
    assert (terminated(failed).exit_code, terminated(failed).reason) == (143, "Error")

    wait_job(api, namespace, "evictme", "Complete", timeout=40)
    status = job_status(api, namespace, "evictme")
    assert not status.failed  # ignored, although backoffLimit is 0
    assert status.succeeded == 1
    assert (state_dir / "attempts").read_text() == "2"
    pods = job_pods(api, namespace, "evictme")
    assert [p.metadata.name for p in pods if p.metadata.name == first["name"]] == []


def test_suspended_job_pod_gets_sigterm(
    kube_cluster: KubeCluster, namespace: str, executor: PodExecutor, api: Any
) -> None:
    apply(
        kube_cluster,
        namespace,
        pvc("state"),
        job(
            "pausable",
            RETRYING,
            env=[POD_NAME_ENV],
            volumes=[claim_volume("state")],
            mounts=[{"name": "state", "mountPath": f"{M}/state"}],
        ),
    )
    state_dir = executor.claim_path(namespace, "state")
    pod = executor.wait_for_pod_phase(namespace, "job-name=pausable", "Running")["metadata"]
    wait_for(lambda: (state_dir / "first-running").exists(), what="pod running")

    kube_cluster.kubectl(
        "patch",
        "job",
        "pausable",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": true}}',
    )
    wait_for(lambda: (state_dir / "sigterm").exists(), what="SIGTERM noted by the pod")
    assert (state_dir / "sigterm").read_text() == pod["name"]
    wait_for(lambda: not job_pods(api, namespace, "pausable"), what="pod deleted")
    wait_job(api, namespace, "pausable", "Suspended")
    assert executor.running() == []
    assert not job_status(api, namespace, "pausable").active


def test_read_only_mounts_and_security_context(
    kube_cluster: KubeCluster, namespace: str, executor: PodExecutor, api: Any
) -> None:
    code = """
        import json, os, pathlib
        def try_write(path):
            try:
                pathlib.Path(path).write_text("x")
                return 0
            except OSError as e:
                return e.errno
        status = pathlib.Path("/proc/self/status").read_text()
        report = {
            "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
            "groups": sorted(os.getgroups()),
            "ro_mount": try_write(f"{M}/ro/file"),
            "ro_claim": try_write(f"{M}/input/file"),
            "root_fs": try_write("/etc/executor-test-" + os.environ["HOSTNAME"]),
            "home": try_write(os.path.join(os.environ["HOME"], "file")),
            "scratch": try_write(f"{M}/scratch/file"),
            "no_new_privs": "NoNewPrivs:\\t1" in status,
        }
        pathlib.Path(f"{M}/out/report.json").write_text(json.dumps(report))
    """
    volumes = [
        claim_volume("out"),
        {"name": "input", "persistentVolumeClaim": {"claimName": "out", "readOnly": True}},
        {"name": "ro", "emptyDir": {}},
        {"name": "scratch", "emptyDir": {"medium": "Memory"}},
    ]
    mounts = [
        {"name": "out", "mountPath": f"{M}/out"},
        {"name": "input", "mountPath": f"{M}/input"},
        {"name": "ro", "mountPath": f"{M}/ro", "readOnly": True},
        {"name": "scratch", "mountPath": f"{M}/scratch"},
    ]
    apply(
        kube_cluster,
        namespace,
        pvc("out"),
        job(
            "secure",
            code,
            volumes=volumes,
            mounts=mounts,
            pod_security={
                "runAsUser": 1000,
                "runAsGroup": 3000,
                "fsGroup": 2000,
                "runAsNonRoot": True,
            },
            container_security={"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
        ),
    )
    wait_job(api, namespace, "secure", "Complete")
    out = executor.claim_path(namespace, "out")
    report = json.loads((out / "report.json").read_text())
    assert report == {
        "uid": 1000,
        "euid": 1000,
        "gid": 3000,
        "groups": [2000],  # fsGroup (+ supplementalGroups)
        "ro_mount": errno.EROFS,
        "ro_claim": errno.EROFS,
        "root_fs": errno.EROFS,  # readOnlyRootFilesystem
        "home": errno.EROFS,  # part of the root filesystem here
        "scratch": 0,
        "no_new_privs": True,
    }
    st = (out / "report.json").stat()
    assert (st.st_uid, st.st_gid) == (1000, 2000)  # fsGroup: setgid claim folder


def test_pods_wait_for_a_slot_and_bad_pods_fail_clearly(
    kube_cluster: KubeCluster, namespace: str, tmp_path: Path, api: Any
) -> None:
    code = """
        import pathlib, time
        marker = pathlib.Path(f"{M}/state/running")
        assert not marker.exists(), "two pods at once"
        marker.touch()
        time.sleep(0.3)
        marker.unlink()
    """
    spec = job(
        "serial",
        code,
        volumes=[claim_volume("state")],
        mounts=[{"name": "state", "mountPath": f"{M}/state"}],
    )
    spec["spec"].update(completions=3, parallelism=3)
    missing = job("missing", "")
    missing["spec"]["template"]["spec"]["containers"][0]["command"] = ["no-such-program"]
    root = job("root", "")
    root["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True}
    with PodExecutor(kube_cluster, tmp_path, namespace=namespace, max_parallel=1) as executor:
        apply(kube_cluster, namespace, pvc("state"), spec, missing, root)
        wait_job(api, namespace, "serial", "Complete")
        assert job_status(api, namespace, "serial").succeeded == 3

        wait_job(api, namespace, "missing", "Failed")
        state = terminated(job_pods(api, namespace, "missing")[0])
        assert (state.exit_code, state.reason) == (128, "StartError")
        assert "no-such-program" in state.message

        # runAsNonRoot with no runAsUser: the kubelet refuses, the pod stays Pending.
        def waiting() -> Any:
            statuses = job_pods(api, namespace, "root")[0].status.container_statuses
            return statuses and statuses[0].state.waiting

        waiting = wait_for(waiting, what="root pod refused")
        assert job_pods(api, namespace, "root")[0].status.phase == "Pending"
        assert waiting.reason == "CreateContainerConfigError"
        assert "runAsNonRoot" in waiting.message
        assert executor.errors == []


def test_stop_kills_running_pods_and_marks_them_failed(
    kube_cluster: KubeCluster, namespace: str, tmp_path: Path, api: Any
) -> None:
    code = """
        import os, pathlib, subprocess, time
        child = subprocess.Popen(["sleep", "300"])  # in the pod's process group
        pathlib.Path("{M}/state/pids").write_text(f"{os.getpid()} {child.pid}")
        time.sleep(300)
    """
    pod = job(
        "forever",
        code,
        volumes=[claim_volume("state")],
        mounts=[{"name": "state", "mountPath": f"{M}/state"}],
    )["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "forever"}, **pod}
    executor = PodExecutor(kube_cluster, tmp_path, namespace=namespace).start()
    try:
        apply(kube_cluster, namespace, pvc("state"), pod)
        pids_file = executor.claim_path(namespace, "state") / "pids"
        wait_for(lambda: pids_file.exists() and pids_file.read_text(), what="pod running")
        pids = [int(p) for p in pids_file.read_text().split()]
        assert executor.running() == [(namespace, "forever")]
    finally:
        executor.stop()
    assert executor.running() == []
    for pid in pids:  # the orphaned `sleep` is reaped by PID 1 a moment later
        wait_for(lambda pid=pid: not _alive(pid), timeout=5, what=f"process {pid} gone")
    status = kubernetes.client.CoreV1Api(api).read_namespaced_pod_status("forever", namespace)
    assert status.status.phase == "Failed"
    conditions = {c.type: c for c in status.status.conditions}
    assert conditions["DisruptionTarget"].reason == "TerminationByKubelet"
    assert terminated(status).exit_code == 137
