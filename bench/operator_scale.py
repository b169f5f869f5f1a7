"""The operator at scale on the real control plane: a burst of SFTJobs, then many idle ones.

A KubeCluster (tests/harness/kube.py: etcd + kube-apiserver + kube-controller-manager,
no kubelet, so training pods stay Pending and nothing ever runs) with the CRDs installed
and our operator as a subprocess (``rlhf operator --standalone --namespace bench``).
The operator acts as its own ServiceAccount (bound to cluster-admin) so the apiserver's
audit log can count its requests apart from everyone else's.

1. Burst: ``--jobs`` (default 500) SFTJobs on the tiny preset created at once by
   ``--clients`` threads of the kubernetes client. A watch on batch Jobs records when
   each job's Job appears; latency = Job seen - start of the CR's create call.
   p50/p95/p99/max, time until all Jobs exist, operator RSS and CPU seconds, and the
   operator's apiserver requests per job (audit log, by user; also the apiserver's
   ``apiserver_request_total`` delta for all clients, divided by the job count).
2. Idle: more SFTJobs up to ``--idle-jobs`` (default 1000) in total, all their Jobs
   created, nothing running; once every Job has its pod and ``--settle`` seconds more,
   ``--idle-seconds`` (default 60) of nothing: operator CPU seconds per minute, RSS at
   the end, its requests per minute by verb and resource (what the timers cost:
   RLHF_RECHECK_SECONDS, default 5).
Experiments, without touching operator code: ``--recheck`` sets RLHF_RECHECK_SECONDS;
``--max-workers N`` starts the operator through bench/operator_with_settings.py, which adds
a Kopf startup handler setting ``settings.execution.max_workers``.

3. ``--profile SECONDS`` (default 20; 0 skips): py-spy (installed from PyPI into
   ``$RLHF_CACHE/bench/tools/py-spy`` on first use) samples the idle operator, all
   threads, and the bench prints the hottest functions. Without py-spy, set
   ``--cprofile`` to run the operator under ``python -m cProfile`` instead (main thread
   only: Kopf's sync handlers run in executor threads, so it undercounts them).

    .venv/bin/python bench/operator_scale.py                  # 500 burst, 1000 idle
    .venv/bin/python bench/operator_scale.py --jobs 50 --idle-jobs 100 --idle-seconds 20
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import common

NAMESPACE = "bench"
GROUP, VERSION, PLURAL = "rlhf.dev", "v1alpha1", "sftjobs"
OPERATOR_SA = "rlhf-operator"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_SA}"
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""


def sft_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SFTJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"preset": "tiny"},
            "dataset": {"preset": "tiny"},
            "training": {"maxSteps": 100, "learningRate": 3e-3, "batchSize": 8, "maxLength": 64},
            "generation": {"samples": 0},
            "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
            "output": {"size": "1Gi"},
        },
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# --- the control plane and the operator ------------------------------------------------


def start_cluster(folder: Path, audit: bool) -> Any:
    from harness.kube import KubeCluster

    extra = []
    if audit:
        policy = folder / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        extra = [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={folder / 'audit.log'}",
            "--audit-log-format=json",
            "--audit-log-maxsize=2000",
            "--audit-log-mode=batch",
            "--audit-log-batch-max-wait=1s",
        ]
    cluster = KubeCluster(extra_apiserver_args=extra, start_timeout=180)
    cluster.start()
    return cluster


def install(cluster: Any, folder: Path) -> Path:
    """CRDs, the namespace, and a ServiceAccount kubeconfig for the operator."""
    cluster.kubectl("apply", "--server-side", "-f", str(common.ROOT / "crds"))
    names = [
        f"crd/{n}" for n in ("sftjobs.rlhf.dev", "rewardmodeljobs.rlhf.dev", "ppojobs.rlhf.dev")
    ]
    for _ in range(60):
        waited = cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=30s", *names, check=False
        )
        if waited.returncode == 0:
            break
        time.sleep(0.5)
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.wait_for_service_account(NAMESPACE)
    cluster.kubectl("create", "serviceaccount", OPERATOR_SA, "-n", NAMESPACE)
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        "rlhf-operator-bench",
        "--clusterrole=cluster-admin",
        f"--serviceaccount={NAMESPACE}:{OPERATOR_SA}",
    )
    return Path(
        cluster.kubeconfig_for_service_account(
            NAMESPACE, OPERATOR_SA, folder / "operator.kubeconfig", duration="4h"
        )
    )


class Operator:
    def __init__(self, kubeconfig: Path, folder: Path, args: argparse.Namespace) -> None:
        from harness.kube import _free_ports

        self.metrics_port, self.health_port = _free_ports(2)
        self.log = folder / "operator.log"
        env = {
            **common.offline_env(),
            "KUBECONFIG": str(kubeconfig),
            "RLHF_TRAINER_IMAGE": "rlhf-trainer:bench",
        }
        if args.recheck is not None:
            env["RLHF_RECHECK_SECONDS"] = str(args.recheck)
        command = [common.PYTHON]
        if args.cprofile:
            command += ["-m", "cProfile", "-o", str(folder / "operator.cprofile")]
        self.memory_profile = folder / "operator-memory.txt"
        if args.max_workers or args.memory_profile:
            command.append(str(common.BENCH / "operator_with_settings.py"))
            if args.memory_profile:
                command += ["--tracemalloc", str(self.memory_profile)]
            if args.max_workers:
                command += ["--max-workers", str(args.max_workers)]
        else:
            command += ["-m", "rlhf_operator.cli"]
        command += [
            "operator",
            "--standalone",
            "--namespace",
            NAMESPACE,
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=common.ROOT
            )
        import psutil

        self.ps = psutil.Process(self.process.pid)

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"operator exited; log {self.log}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
                ) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"operator not healthy after {timeout}s; log:\n{self.tail()}")

    def usage(self) -> dict[str, float]:
        times = self.ps.cpu_times()
        return {
            "cpu_seconds": times.user + times.system,
            "rss_mb": self.ps.memory_info().rss / 2**20,
            "threads": self.ps.num_threads(),
        }

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as reply:
                return str(reply.read().decode())
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(
                signal.SIGINT if "cProfile" in str(self.process.args) else signal.SIGTERM
            )
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- the bench's own client -------------------------------------------------------------


def client(cluster: Any, pool: int) -> Any:
    from kubernetes import client as k8s
    from kubernetes import config

    configuration = k8s.Configuration()
    config.load_kube_config(
        config_file=str(cluster.admin_kubeconfig), client_configuration=configuration
    )
    configuration.connection_pool_maxsize = max(4, pool)
    api = k8s.ApiClient(configuration)
    api.user_agent = "rlhf-bench"
    return api


class JobWatch:
    """Arrival times (monotonic) of the operator's batch Jobs, by owning SFTJob name."""

    def __init__(self, api: Any) -> None:
        from kubernetes import client as k8s

        self.batch = k8s.BatchV1Api(api)
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = False
        listed = self.batch.list_namespaced_job(
            NAMESPACE, label_selector="app.kubernetes.io/managed-by=rlhf-operator"
        )
        self.resource_version = listed.metadata.resource_version
        for job in listed.items:
            self._add(job.metadata.labels or {}, time.monotonic())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _add(self, labels: dict[str, str], when: float) -> None:
        owner = labels.get("rlhf.dev/job")
        if owner:
            with self.changed:
                self.seen.setdefault(owner, when)
                self.changed.notify_all()

    def _run(self) -> None:
        from kubernetes import watch

        while not self.stopping:
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.batch.list_namespaced_job,
                    NAMESPACE,
                    label_selector="app.kubernetes.io/managed-by=rlhf-operator",
                    resource_version=self.resource_version,
                    timeout_seconds=300,
                    allow_watch_bookmarks=True,
                ):
                    now = time.monotonic()
                    obj = event["object"]
                    self.resource_version = obj.metadata.resource_version
                    if event["type"] == "ADDED":
                        self._add(obj.metadata.labels or {}, now)
                    if self.stopping:
                        break
            except Exception as error:  # a dropped watch: resume from the last version
                if "410" in str(error):
                    self.resource_version = None
                time.sleep(0.2)

    def wait_for(self, names: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not names <= self.seen.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 1.0))
        return True


def create_jobs(api: Any, names: list[str], clients: int) -> dict[str, tuple[float, float]]:
    """Create the SFTJobs from ``clients`` threads; (call start, call end) monotonic times."""
    from kubernetes import client as k8s

    custom = k8s.CustomObjectsApi(api)
    times: dict[str, tuple[float, float]] = {}

    def create(name: str) -> None:
        began = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, sft_job(name))
        times[name] = (began, time.monotonic())

    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(create, name) for name in names]:
            future.result()
    return times


def wait_for_pods(api: Any, count: int, timeout: float) -> int:
    """Wait until ``count`` training pods exist (one per Job); returns how many do."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    found = 0
    while time.monotonic() < deadline:
        reply = core.list_namespaced_pod(
            NAMESPACE,
            label_selector="app.kubernetes.io/managed-by=rlhf-operator",
            _preload_content=False,
        )
        found = len(json.loads(reply.data).get("items") or [])
        if found >= count:
            break
        time.sleep(2)
    return found


def phases(api: Any) -> dict[str, int]:
    from kubernetes import client as k8s

    items = k8s.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL
    )["items"]
    return dict(
        collections.Counter((item.get("status") or {}).get("phase", "(none)") for item in items)
    )


# --- apiserver request accounting ----------------------------------------------------------


def request_total(cluster: Any) -> float:
    status, body = cluster.api_get("/metrics", timeout=30)
    if status != 200:
        return float("nan")
    total = 0.0
    for line in body.splitlines():
        if line.startswith("apiserver_request_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def audit_requests(log: Path, since: float, until: float, user: str) -> collections.Counter:
    """Requests by ``user`` received in [since, until) (wall-clock seconds), by verb+resource."""
    counts: collections.Counter = collections.Counter()
    if not log.exists():
        return counts
    with open(log, errors="replace") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (event.get("user") or {}).get("username") != user:
                continue
            stage = event.get("stage")
            started_watch = stage == "ResponseStarted" and event.get("verb") == "watch"
            if stage not in ("ResponseComplete", "Panic") and not started_watch:
                continue
            stamp = event.get("requestReceivedTimestamp")
            if not stamp:
                continue
            received = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            if not since <= received < until:
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", event.get("requestURI", "?").split("?")[0])
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            counts[f"{event.get('verb')} {resource}"] += 1
    return counts


def flush_audit() -> None:
    time.sleep(2.5)  # the batch audit backend writes at most every --audit-log-batch-max-wait


# --- profiling -----------------------------------------------------------------------------


def py_spy() -> Path | None:
    tools = common.cache_root() / "tools" / "py-spy"
    binary = tools / "bin" / "py-spy"
    if binary.exists():
        return binary
    result = subprocess.run(
        [common.PYTHON, "-m", "pip", "install", "--quiet", "--target", str(tools), "py-spy"],
        capture_output=True,
        text=True,
    )
    return binary if result.returncode == 0 and binary.exists() else None


def profile(pid: int, seconds: int, folder: Path) -> dict[str, Any]:
    binary = py_spy()
    if binary is None:
        return {"error": "py-spy did not install from PyPI; rerun with --cprofile"}
    raw = folder / "operator-idle.pyspy.txt"
    result = subprocess.run(
        [
            str(binary),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "50",
            "--nonblocking",
            "--threads",
            "--format",
            "raw",
            "--output",
            str(raw),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not raw.exists():
        return {"error": (result.stderr or result.stdout)[-500:]}
    inclusive: collections.Counter = collections.Counter()
    leaf: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if not f.startswith("thread ")]
        for frame in set(frames):
            inclusive[_short(frame)] += count
        if frames:
            leaf[_short(frames[-1])] += count
    return {
        "samples": total,
        "seconds": seconds,
        "raw": str(raw),
        "inclusive": inclusive.most_common(25),
        "self": leaf.most_common(15),
    }


def memory_profile(operator: Operator) -> str:
    """Ask the traced operator for its live allocations (SIGUSR1) and print the top."""
    operator.memory_profile.unlink(missing_ok=True)
    operator.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not operator.memory_profile.exists():
        time.sleep(1)
    time.sleep(2)  # let the write finish
    if not operator.memory_profile.exists():
        return "no memory profile written"
    text = operator.memory_profile.read_text()
    print("\noperator memory (tracemalloc, live at idle, biggest first):")
    print("\n".join(text.splitlines()[:90]))
    return text


def _short(frame: str) -> str:
    """``function (path/to/module.py:line)`` -> ``function (module.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    start = parts.index("site-packages") + 1 if "site-packages" in parts else len(parts) - 2
    parts = parts[start:]
    return f"{name} ({'/'.join(parts)})"


# --- the bench -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="SFTJobs in the burst (500)")
    parser.add_argument(
        "--idle-jobs", type=int, default=None, help="SFTJobs present when idle (2 x --jobs)"
    )
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--settle", type=float, default=15, help="wait before the idle window")
    parser.add_argument("--clients", type=int, default=4, help="threads creating SFTJobs")
    parser.add_argument(
        "--recheck", type=float, default=None, help="RLHF_RECHECK_SECONDS (operator default 5)"
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="experiment: Kopf's executor threads for sync handlers (default 6 on 2 CPUs),"
        " set through bench/operator_with_settings.py",
    )
    parser.add_argument("--profile", type=int, default=20, help="py-spy seconds at idle (0: no)")
    parser.add_argument("--cprofile", action="store_true", help="run the operator under cProfile")
    parser.add_argument(
        "--memory-profile",
        action="store_true",
        help="trace the operator's allocations (slows it) and print the biggest at idle",
    )
    parser.add_argument("--no-audit", action="store_true", help="no apiserver audit log")
    parser.add_argument("--timeout", type=float, default=900, help="for all Jobs to appear")
    parser.add_argument("--workdir", help="logs, audit log, profiles (default: temp)")
    parser.add_argument("--json", help="write the figures as JSON here")
    args = parser.parse_args()
    idle_jobs = args.idle_jobs if args.idle_jobs is not None else 2 * args.jobs

    from harness.kube import missing_binaries

    missing = missing_binaries()
    if missing:
        raise SystemExit(f"missing {missing}: run `make kube-tools` (hack/build-kube.sh)")
    folder = common.workdir("operator", args.workdir)
    document: dict[str, Any] = {"machine": common.machine(), "settings": vars(args)}
    print(f"work folder {folder}", flush=True)
    cluster = start_cluster(folder, audit=not args.no_audit)
    operator = None
    watcher = None
    try:
        print(f"control plane up in {cluster.startup_seconds:.1f}s", flush=True)
        kubeconfig = install(cluster, folder)
        api = client(cluster, args.clients)
        operator = Operator(kubeconfig, folder, args)
        operator.wait_healthy()
        watcher = JobWatch(api)
        began = time.monotonic()
        create_jobs(api, ["warmup"], 1)
        if not watcher.wait_for({"warmup"}, 120):
            raise SystemExit(f"the operator made no Job for 'warmup'; log:\n{operator.tail()}")
        print(f"operator ready; first Job {time.monotonic() - began:.2f}s after its SFTJob")
        time.sleep(2)

        # --- 1. burst
        names = [f"burst-{i:05d}" for i in range(args.jobs)]
        before = operator.usage()
        requests_before = request_total(cluster)
        wall_began = time.time()
        burst_began = time.monotonic()
        times = create_jobs(api, names, args.clients)
        created = time.monotonic() - burst_began
        print(
            f"created {len(names)} SFTJobs in {created:.2f}s ({args.clients} clients)", flush=True
        )
        complete = watcher.wait_for(set(names), args.timeout)
        done = time.monotonic()
        wall_done = time.time()
        after = operator.usage()
        requests_after = request_total(cluster)
        latencies = [watcher.seen[n] - times[n][0] for n in names if n in watcher.seen]
        from_return = [watcher.seen[n] - times[n][1] for n in names if n in watcher.seen]
        all_jobs = max(watcher.seen[n] for n in names if n in watcher.seen) - burst_began
        flush_audit()
        operator_requests = audit_requests(
            folder / "audit.log", wall_began, wall_done, OPERATOR_USER
        )
        burst = {
            "jobs": args.jobs,
            "complete": complete,
            "jobs_seen": len(latencies),
            "create_calls_seconds": created,
            "create_call_mean_ms": 1000
            * sum(times[n][1] - times[n][0] for n in names)
            / len(names),
            "latency_p50": percentile(latencies, 50),
            "latency_p95": percentile(latencies, 95),
            "latency_p99": percentile(latencies, 99),
            "latency_max": max(latencies) if latencies else float("nan"),
            "latency_from_return_p50": percentile(from_return, 50),
            "latency_from_return_p99": percentile(from_return, 99),
            "all_jobs_seconds": all_jobs,
            "operator_cpu_seconds": after["cpu_seconds"] - before["cpu_seconds"],
            "operator_rss_mb_before": before["rss_mb"],
            "operator_rss_mb_after": after["rss_mb"],
            "operator_requests": sum(operator_requests.values()),
            "operator_requests_per_job": sum(operator_requests.values()) / args.jobs,
            "operator_requests_by_kind": dict(operator_requests.most_common()),
            "apiserver_requests_all_clients_per_job": (requests_after - requests_before)
            / args.jobs,
            "window_seconds": done - burst_began,
        }
        document["burst"] = burst
        print(
            f"burst: p50 {burst['latency_p50']:.2f}s p95 {burst['latency_p95']:.2f}s"
            f" p99 {burst['latency_p99']:.2f}s, all {len(latencies)} Jobs in"
            f" {all_jobs:.1f}s, operator CPU {burst['operator_cpu_seconds']:.1f}s,"
            f" RSS {after['rss_mb']:.0f} MB, {burst['operator_requests_per_job']:.1f}"
            " operator requests/job",
            flush=True,
        )

        # --- 2. idle with idle_jobs CRs
        extra = [f"idle-{i:05d}" for i in range(max(0, idle_jobs - args.jobs - 1))]
        if extra:
            fill_began = time.monotonic()
            create_jobs(api, extra, args.clients)
            if not watcher.wait_for(set(extra), args.timeout):
                print("warning: not every Job appeared before the idle window", flush=True)
            print(
                f"{len(extra)} more SFTJobs ({idle_jobs} in all) with Jobs in"
                f" {time.monotonic() - fill_began:.1f}s; settling {args.settle:.0f}s",
                flush=True,
            )
        # The controller-manager makes the Jobs' pods at its own pace (its client is
        # rate-limited); each new pod rightly costs the operator a status write
        # (status.pods). Idle starts once every Job has its pod.
        settle_began = time.monotonic()
        pods = wait_for_pods(api, idle_jobs, args.timeout)
        print(
            f"{pods} training pods exist after {time.monotonic() - settle_began:.1f}s;"
            f" settling {args.settle:.0f}s",
            flush=True,
        )
        time.sleep(args.settle)
        start = operator.usage()
        idle_wall_began = time.time()
        idle_began = time.monotonic()
        requests_before = request_total(cluster)
        samples = []
        while time.monotonic() - idle_began < args.idle_seconds:
            time.sleep(min(5.0, args.idle_seconds - (time.monotonic() - idle_began)))
            samples.append(operator.usage())
        idle_elapsed = time.monotonic() - idle_began
        end = operator.usage()
        requests_after = request_total(cluster)
        idle_wall_end = time.time()
        flush_audit()
        idle_requests = audit_requests(
            folder / "audit.log", idle_wall_began, idle_wall_end, OPERATOR_USER
        )
        per_minute = 60 / idle_elapsed
        idle = {
            "jobs": idle_jobs,
            "seconds": idle_elapsed,
            "operator_cpu_seconds_per_minute": (end["cpu_seconds"] - start["cpu_seconds"])
            * per_minute,
            "operator_cpu_percent_of_one_core": 100
            * (end["cpu_seconds"] - start["cpu_seconds"])
            / idle_elapsed,
            "operator_rss_mb": end["rss_mb"],
            "operator_rss_mb_max": max(s["rss_mb"] for s in [start, *samples, end]),
            "operator_threads": end["threads"],
            "operator_requests_per_minute": sum(idle_requests.values()) * per_minute,
            "operator_requests_per_job_per_minute": sum(idle_requests.values())
            * per_minute
            / idle_jobs,
            "operator_requests_by_kind_per_minute": {
                key: round(count * per_minute, 1) for key, count in idle_requests.most_common()
            },
            "apiserver_requests_all_clients_per_minute": (requests_after - requests_before)
            * per_minute,
            "phases": phases(api),
        }
        document["idle"] = idle
        print(
            f"idle ({idle_jobs} SFTJobs): operator CPU"
            f" {idle['operator_cpu_seconds_per_minute']:.1f}"
            f" s/min ({idle['operator_cpu_percent_of_one_core']:.0f}% of a core), RSS"
            f" {idle['operator_rss_mb']:.0f} MB, {idle['operator_requests_per_minute']:.0f}"
            " requests/min",
            flush=True,
        )
        document["operator_metrics"] = [
            line
            for line in operator.metrics().splitlines()
            if line.startswith(
                (
                    "rlhf_operator_job_creation_latency_seconds",
                    "rlhf_operator_reconcile_duration_seconds_count",
                    "rlhf_operator_reconcile_duration_seconds_sum",
                    "rlhf_operator_reconcile_errors_total",
                )
            )
        ]
        if args.memory_profile:
            document["memory_profile"] = memory_profile(operator)
        if args.profile > 0 and not args.cprofile:
            print(f"profiling the idle operator for {args.profile}s with py-spy", flush=True)
            document["profile"] = profile(operator.process.pid, args.profile, folder)
    finally:
        if watcher is not None:
            watcher.stopping = True
        if operator is not None:
            operator.stop()
        cluster.stop()

    report(document, args)
    if args.cprofile:
        import pstats

        stats = pstats.Stats(str(folder / "operator.cprofile"))
        print("\ncProfile of the operator (main thread only), by cumulative time:")
        stats.sort_stats("cumulative").print_stats(25)
    common.save_json(args.json, document)
    print(f"logs in {folder}")
    return 0


def report(document: dict[str, Any], args: argparse.Namespace) -> None:
    burst, idle = document["burst"], document["idle"]
    print()
    print(
        common.table(
            ["burst figure", "value", "goal"],
            [
                ["SFTJobs created at once", burst["jobs"], ""],
                ["create calls took (s)", burst["create_calls_seconds"], ""],
                ["apply -> Job p50 (s)", burst["latency_p50"], ""],
                ["apply -> Job p95 (s)", burst["latency_p95"], ""],
                ["apply -> Job p99 (s)", burst["latency_p99"], "< 1"],
                ["apply -> Job max (s)", burst["latency_max"], ""],
                ["until all Jobs exist (s)", burst["all_jobs_seconds"], ""],
                ["operator CPU during burst (s)", burst["operator_cpu_seconds"], ""],
                ["operator RSS after burst (MB)", burst["operator_rss_mb_after"], "< 200"],
                ["operator requests per job (audit)", burst["operator_requests_per_job"], ""],
                [
                    "apiserver requests per job (all clients)",
                    burst["apiserver_requests_all_clients_per_job"],
                    "",
                ],
            ],
        )
    )
    print("\noperator requests during the burst, by verb and resource:")
    for key, count in list(burst["operator_requests_by_kind"].items())[:15]:
        print(f"  {count:7d}  {key}  ({count / burst['jobs']:.2f}/job)")
    print()
    print(
        common.table(
            [f"idle figure ({idle['jobs']} SFTJobs, {idle['seconds']:.0f}s)", "value", "goal"],
            [
                ["operator CPU (s per minute)", idle["operator_cpu_seconds_per_minute"], ""],
                ["operator CPU (% of one core)", idle["operator_cpu_percent_of_one_core"], ""],
                ["operator RSS (MB)", idle["operator_rss_mb"], "< 200"],
                ["operator requests per minute", idle["operator_requests_per_minute"], ""],
                [
                    "operator requests per job per minute",
                    idle["operator_requests_per_job_per_minute"],
                    "",
                ],
                [
                    "apiserver requests per minute (all clients)",
                    idle["apiserver_requests_all_clients_per_minute"],
                    "",
                ],
            ],
        )
    )
    print(f"phases: {idle['phases']}")
    print("\noperator requests per minute at idle, by verb and resource:")
    for key, count in list(idle["operator_requests_by_kind_per_minute"].items())[:15]:
        print(f"  {count:9.1f}  {key}")
    found = document.get("profile")
    if found and "inclusive" in found:
        print(
            f"\npy-spy at idle ({found['samples']} non-idle samples in {found['seconds']}s"
            " at 50 Hz, all threads): functions by inclusive samples"
        )
        for name, count in found["inclusive"]:
            print(f"  {100 * count / max(1, found['samples']):5.1f}%  {name}")
        print("leaf (self) samples:")
        for name, count in found["self"]:
            print(f"  {100 * count / max(1, found['samples']):5.1f}%  {name}")
    elif found:
        print(f"\nprofile: {found.get('error')}")


if __name__ == "__main__":
    sys.exit(main())
