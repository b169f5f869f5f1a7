"""What a running trainer tells the world: Prometheus /metrics, /progress JSON, and on
exit metrics.json plus a one-line summary in the termination message.

The operator and local mode poll /progress (the pod needs no Kubernetes API rights);
Prometheus scrapes /metrics. Only the main process of each node serves.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from rlhf_operator.api import Progress

# The client would add a NAME_created series (the Unix time the series was created) next to
# every counter: noise in every query and dashboard, and not a figure anyone plots.
disable_created_metrics()

# The job's identity. Not `namespace` / `job`: Prometheus gives every target those labels,
# and a scrape without honor_labels (the common prometheus.io/scrape recipes) would rename
# ours to exported_namespace / exported_job. `rlhf_` names never collide with target labels.
LABELS = ("rlhf_namespace", "rlhf_job", "kind")

# rlhf_trainer_info{stage}: the stage a kind runs (`python -m rlhf_trainer STAGE`).
STAGES = {"SFTJob": "sft", "RewardModelJob": "rm", "PPOJob": "ppo", "DPOJob": "dpo"}

# Headline figures, by the name the trainer logs them under, get a series of their own.
NAMED_GAUGES: dict[str, tuple[str, str]] = {
    "loss": ("rlhf_training_loss", "Training loss of the latest logging window."),
    "learning_rate": ("rlhf_training_learning_rate", "Current learning rate."),
    "lr": ("rlhf_training_learning_rate", "Current learning rate."),
    "grad_norm": ("rlhf_training_gradient_norm", "Gradient norm before clipping."),
    "tokens_per_second": ("rlhf_training_tokens_per_second", "Training throughput in tokens."),
    "samples_per_second": ("rlhf_training_samples_per_second", "Training throughput in examples."),
    "objective/scores": ("rlhf_ppo_score", "Mean reward-model score of the policy's responses."),
    "objective/rlhf_reward": ("rlhf_ppo_rlhf_reward", "Mean score minus the KL penalty."),
    "objective/kl": ("rlhf_ppo_kl", "Mean KL divergence of the policy from the reference."),
    "objective/entropy": ("rlhf_ppo_entropy", "Mean per-sequence entropy of the policy."),
    "policy/clipfrac_avg": ("rlhf_ppo_clip_fraction", "Fraction of policy ratios clipped."),
    "loss/value_avg": ("rlhf_ppo_value_loss", "Value-function loss."),
    "loss/policy_avg": ("rlhf_ppo_policy_loss", "Clipped policy-gradient loss."),
    "time/total": ("rlhf_ppo_update_seconds", "Wall-clock seconds of the latest RL update."),
    "generation/tokens_per_second": (
        "rlhf_ppo_generation_tokens_per_second",
        "Response tokens generated per second of the latest update's generation phase.",
    ),
    "completions/mean_length": (
        "rlhf_ppo_response_length_tokens",
        "Mean response length in tokens, stop token included.",
    ),
    "completions/clipped_ratio": (
        "rlhf_ppo_truncated_response_ratio",
        "Share of responses that hit the length limit (no stop token).",
    ),
    "objective/frac_reward_zero_std": (
        "rlhf_ppo_zero_variance_group_ratio",
        "Share of prompt groups whose rewards all tie (grpo, rloo): no learning signal.",
    ),
    "rewards/accuracies": (
        "rlhf_dpo_reward_accuracy",
        "Share of training pairs whose implicit DPO reward ranks the chosen answer higher.",
    ),
    "rewards/margins": (
        "rlhf_dpo_reward_margin",
        "Mean implicit DPO reward of the chosen answer minus the rejected one.",
    ),
}

# Figures logged as PREFIX + phase -> a series with a `phase` label (ppo_core's phases).
PHASE_GAUGES: dict[str, tuple[str, str]] = {
    "time/": ("rlhf_ppo_phase_seconds", "Seconds of the latest RL update spent in each phase."),
    "gpu_memory_peak_bytes/": (
        "rlhf_ppo_phase_gpu_memory_peak_bytes",
        "Peak GPU memory allocated during each phase of the latest RL update (GPU runs only).",
    ),
}

# Logged figures that another series already carries; rlhf_train_metric does not repeat them.
CARRIED_ELSEWHERE = {
    "epoch": "rlhf_training_epoch",
    "num_tokens": "rlhf_training_tokens_total",
    "episode": "rlhf_ppo_episodes_total",
    "eps": "rlhf_training_samples_per_second",  # PPO's episodes per second
}

# The history of logged figures, one JSON row a line, kept in the output folder as it grows:
# a resumed run reloads the rows up to its checkpoint, so its curves keep their start.
HISTORY_FILE = "history.jsonl"

# Running totals of work done -> the counter that counts them (its name without _total).
COUNTERS: dict[str, tuple[str, str]] = {
    "steps": ("rlhf_training_steps", "Optimizer steps (PPO updates) taken by this process."),
    "tokens": ("rlhf_training_tokens", "Tokens trained on (all ranks) by this process."),
    "samples": ("rlhf_training_samples", "Training examples (all ranks) by this process."),
    "episodes": ("rlhf_ppo_episodes", "PPO episodes (all ranks) by this process."),
}


class Telemetry:
    """Progress, metrics and their endpoint for one training process."""

    def __init__(
        self,
        namespace: str,
        job: str,
        kind: str,
        *,
        stage: str | None = None,
        serve: bool = True,
    ) -> None:
        self.labels = {"rlhf_namespace": namespace, "rlhf_job": job, "kind": kind}
        self.registry = CollectorRegistry()
        self.serve = serve
        self._lock = threading.Lock()
        self.step = 0
        self.total_steps: int | None = None
        self.epoch: float | None = None
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self._history_file: Path | None = None
        self.stage_state = "starting"
        self._recent: deque[tuple[float, int]] = deque(maxlen=20)
        # The running totals (tokens, samples, episodes) last seen, and when.
        self._totals: dict[str, float] = {}
        self._totals_time: float | None = None
        self._server: ThreadingHTTPServer | None = None
        self.address: str | None = None

        def gauge(name: str, help_text: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, help_text, (*LABELS, *extra), registry=self.registry)

        def counter(name: str, help_text: str) -> Counter:
            return Counter(name, help_text, LABELS, registry=self.registry)

        self._step = gauge("rlhf_training_step", "Optimizer steps (PPO updates) completed.")
        self._total = gauge("rlhf_training_total_steps", "Optimizer steps planned.")
        self._ratio = gauge("rlhf_training_progress_ratio", "Completed fraction of training, 0-1.")
        self._epoch = gauge("rlhf_training_epoch", "Epochs completed (fractional).")
        self._remaining = gauge(
            "rlhf_training_remaining_seconds", "Estimated seconds until training ends."
        )
        self._counters = {
            quantity: counter(name, text) for quantity, (name, text) in COUNTERS.items()
        }
        gauges: dict[str, Gauge] = {}
        for name, text in NAMED_GAUGES.values():
            if name not in gauges:
                gauges[name] = gauge(name, text)
        self._named = {key: gauges[name] for key, (name, _) in NAMED_GAUGES.items()}
        self._phase_gauges = {
            prefix: gauge(name, text, ("phase",)) for prefix, (name, text) in PHASE_GAUGES.items()
        }
        self._train_metric = gauge(
            "rlhf_train_metric",
            "Training figures that have no series of their own, by logged name.",
            ("metric",),
        )
        self._eval_metric = gauge(
            "rlhf_eval_metric", "Evaluation figures (accuracy, f1, loss, reward...).", ("metric",)
        )
        self._test_metric = gauge(
            "rlhf_test_metric", "Final figures on held-out test data, by name.", ("metric",)
        )
        self._info = gauge("rlhf_trainer_info", "Constant 1, labelled with the stage.", ("stage",))
        self._info.labels(**self.labels, stage=stage or STAGES.get(kind, kind)).set(1)

    # --- updates ----------------------------------------------------------------------

    def start(self, host: str, port: int) -> None:
        """Serve /metrics and /progress in a background thread (main process only)."""
        if not self.serve:
            return
        telemetry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, kind = generate_latest(telemetry.registry), CONTENT_TYPE_LATEST
                elif self.path.startswith("/progress"):
                    body = json.dumps(telemetry.progress_document()).encode()
                    kind = "application/json"
                elif self.path.startswith("/healthz"):
                    body, kind = b"ok", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *arguments: Any) -> None:
                return  # scrapes every few seconds would drown the training log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        self.address = f"http://{bound_host}:{bound_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def keep_history(self, path: Path, resumed_step: int | None) -> None:
        """Append every logged row to ``path`` from now on. A run resumed from the checkpoint
        at ``resumed_step`` first takes back the rows logged up to that step (those after it
        are trained again); a fresh run (None) starts the file anew."""
        with self._lock:
            earlier = []
            if resumed_step is not None:
                earlier = history_until(read_history(path), resumed_step)
            self.history = [*earlier, *self.history]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(row) + "\n" for row in self.history))
            self._history_file = path

    def set_total(self, total_steps: int) -> None:
        with self._lock:
            self.total_steps = total_steps
            self._total.labels(**self.labels).set(total_steps)

    def set_state(self, state: str) -> None:
        with self._lock:
            self.stage_state = state

    def record_step(self, step: int, epoch: float | None = None) -> None:
        with self._lock:
            self._advance({"steps": step})
            self.step = step
            self.epoch = epoch
            self._recent.append((time.monotonic(), step))
            self._step.labels(**self.labels).set(step)
            if epoch is not None:
                self._epoch.labels(**self.labels).set(epoch)
            if self.total_steps:
                self._ratio.labels(**self.labels).set(min(1.0, step / self.total_steps))
            remaining = self.remaining_seconds()
            if remaining is not None:
                self._remaining.labels(**self.labels).set(remaining)
        self.stage_state = "training"

    def start_counting(
        self,
        step: int | None = None,
        tokens_seen: float | None = None,
        samples_seen: float | None = None,
        episodes_seen: float | None = None,
    ) -> None:
        """Where training starts in this process: its step and running totals (a resumed
        run's are not 0). The counters count what is added from here, the first rates are
        measured from now. Without it, counting starts from 0."""
        seen = {
            "steps": step,
            "tokens": tokens_seen,
            "samples": samples_seen,
            "episodes": episodes_seen,
        }
        with self._lock:
            self._totals_time = time.monotonic()
            self._totals.update({key: value for key, value in seen.items() if value is not None})

    def record_throughput(
        self, tokens_seen: float | None, samples_seen: float | None
    ) -> dict[str, float]:
        """Running totals of tokens and samples (None: not counted) advance the counters by
        what was added since the previous call; returns the per-second rates over that
        window (none for a window in which nothing was added: no step was taken)."""
        now = time.monotonic()
        with self._lock:
            previous, since = dict(self._totals), self._totals_time
            added = self._advance({"tokens": tokens_seen, "samples": samples_seen})
            if not any(added.values()):
                return {}
            self._totals_time = now
        if since is None or now <= since:
            return {}
        return {
            f"{quantity}_per_second": amount / (now - since)
            for quantity, amount in added.items()
            if quantity in previous
        }

    def record_episodes(self, episodes_seen: float) -> None:
        """PPO's running total of episodes advances rlhf_ppo_episodes_total."""
        with self._lock:
            self._advance({"episodes": episodes_seen})

    def _advance(self, totals: dict[str, float | None]) -> dict[str, float]:
        """Count what each running total added since it was last seen (under the lock). A
        total seen for the first time counts from 0; one that went down restarted."""
        added = {}
        for quantity, total in totals.items():
            if total is None:
                continue
            amount = total - self._totals.get(quantity, 0.0)
            if amount > 0:
                self._counters[quantity].labels(**self.labels).inc(amount)
            added[quantity] = max(amount, 0.0)
            self._totals[quantity] = total
        return added

    def record_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log figures: update gauges, the latest values and the history for plots."""
        clean = {name: float(value) for name, value in metrics.items() if _is_number(value)}
        with self._lock:
            self.metrics.update(clean)
            row = {"step": self.step if step is None else step, **clean}
            self.history.append(row)
            if self._history_file is not None:
                with self._history_file.open("a") as file:
                    file.write(json.dumps(row) + "\n")
            for name, value in clean.items():
                if name.startswith("eval_") or name.startswith("eval/"):
                    self._eval_metric.labels(**self.labels, metric=name[5:]).set(value)
                elif name.startswith("test_"):
                    self._test_metric.labels(**self.labels, metric=name[5:]).set(value)
                elif name in self._named:
                    self._named[name].labels(**self.labels).set(value)
                elif phase_gauge := self._phase_gauge(name):
                    prefix, series = phase_gauge
                    series.labels(**self.labels, phase=name[len(prefix) :]).set(value)
                elif name not in CARRIED_ELSEWHERE:
                    self._train_metric.labels(**self.labels, metric=name).set(value)

    def _phase_gauge(self, name: str) -> tuple[str, Gauge] | None:
        for prefix, series in self._phase_gauges.items():
            if name.startswith(prefix):
                return prefix, series
        return None

    # --- reading ----------------------------------------------------------------------

    def remaining_seconds(self) -> int | None:
        if not self.total_steps or len(self._recent) < 2:
            return None
        (start_time, start_step), (end_time, end_step) = self._recent[0], self._recent[-1]
        if end_step <= start_step:
            return None
        rate = (end_step - start_step) / (end_time - start_time)
        return max(0, round((self.total_steps - end_step) / rate))

    def progress(self) -> Progress:
        percent = None
        if self.total_steps:
            percent = min(100, int(100 * self.step / self.total_steps))
        return Progress(
            step=self.step,
            total_steps=self.total_steps,
            percent=percent,
            epoch=self.epoch,
            estimated_remaining_seconds=self.remaining_seconds(),
            last_update_time=datetime.now(UTC).replace(microsecond=0),
        )

    def progress_document(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self.stage_state,
                "progress": self.progress().to_manifest(),
                "metrics": dict(self.metrics),
            }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_history(path: Path) -> list[dict[str, Any]]:
    """The rows of a history file; a line cut short by a kill is left out."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return rows


def history_until(rows: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """The rows logged up to (and at) ``step``: what a checkpoint at that step had seen."""
    return [row for row in rows if row["step"] <= step]


def write_summary(
    output_dir: Path,
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    termination_message_path: str | None,
) -> None:
    """metrics.json (everything) and the termination message (the headline, < 4 KiB)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(
        json.dumps({**summary, "history": history}, indent=2, sort_keys=True)
    )
    if termination_message_path:
        write_termination_message(termination_message_path, summary)


def write_termination_message(path: str, summary: dict[str, Any]) -> None:
    """Kubernetes keeps at most 4096 bytes: drop figures until the summary fits."""
    message = dict(summary)
    metrics = dict(message.pop("metrics", {}))
    while True:
        text = json.dumps({**message, **({"metrics": metrics} if metrics else {})}, sort_keys=True)
        if len(text.encode()) <= 4000 or not metrics:
            break
        metrics.pop(sorted(metrics)[-1])
    try:
        Path(path).write_text(text[:4000])
    except OSError:
        pass  # no termination-log mount (a laptop run): metrics.json has it all
