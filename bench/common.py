"""Helpers shared by the benchmarks: paths, the model/data the benches train on, trainer
configs written the way the operator writes them, timing of subprocesses, tables.

Benchmarks print figures; the test suite never runs them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = sys.executable
for _path in (ROOT / "operator", ROOT / "trainer_image", ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def cache_root() -> Path:
    """``$RLHF_CACHE/bench`` (default ``~/.cache/rlhf-operator/bench``)."""
    base = os.environ.get("RLHF_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "rlhf-operator"
    return root / "bench"


def workdir(name: str, given: str | None) -> Path:
    """The folder a bench writes into: ``--workdir`` or a fresh temporary one."""
    if given:
        path = Path(given).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"rlhf-bench-{name}-"))


THREADS_HELP = (
    "torch threads per process (OMP_NUM_THREADS); 0 keeps torch's default (one per core)."
    " Default 1: on a shared 2-core machine a second OpenMP thread that gets descheduled"
    " stalls every parallel region (20 ms steps become 500+ ms), so timings follow other"
    " people's load rather than the code"
)


def thread_env(threads: int) -> dict[str, str]:
    """OMP/MKL thread variables for ``--threads`` (nothing for 0)."""
    if threads <= 0:
        return {}
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def offline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a trainer subprocess: no hub, no telemetry, repo on the path."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    path = [str(ROOT / "operator"), str(ROOT / "trainer_image")]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.update(extra or {})
    return env


# --- models and data ------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaSize:
    """A Llama built from a config (random weights) with the tiny preset's tokenizer."""

    hidden: int
    layers: int
    intermediate: int
    heads: int

    @property
    def name(self) -> str:
        return f"llama-h{self.hidden}-l{self.layers}-i{self.intermediate}"


SIZES = {
    "tiny": LlamaSize(64, 2, 128, 4),  # the preset itself
    "10m": LlamaSize(384, 6, 1024, 6),  # ~10.9M parameters with the 400-token vocabulary
    "30m": LlamaSize(512, 8, 1536, 8),
}


def build_llama(folder: Path, size: LlamaSize, seed: int = 0) -> Path:
    """Save a randomly initialised Llama causal LM and the tiny tokenizer into ``folder``
    (once; reused when ``config.json`` is there)."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from rlhf_trainer.presets import build_tiny_tokenizer, tiny_llama_config
    from transformers import LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging.", dir=folder.parent))
    tokenizer = build_tiny_tokenizer(staging)
    config = tiny_llama_config(
        tokenizer,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(staging)
    folder.rmdir()
    os.rename(staging, folder)
    return folder


def parameter_count(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                total += _numel(handle.get_slice(key).get_shape())
    return total


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# --- trainer configs ------------------------------------------------------------------


CPU = {"resources": {"gpusPerNode": 0}}


def job_manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "bench"},
        "spec": spec,
    }


def claim(path: str = ".") -> dict[str, Any]:
    """A ``pvc`` source; the bench maps it to a local path through ``paths.inputs``."""
    return {"pvc": {"claimName": "bench", "path": path}}


def write_trainer_config(
    folder: Path,
    name: str,
    manifest: dict[str, Any],
    inputs: dict[str, str] | None = None,
    cache: Path | None = None,
    device: str = "cpu",
) -> tuple[Path, Path]:
    """The trainer config JSON for a manifest, as the operator renders it (validated by
    TrainerConfig); returns (config path, output folder)."""
    from rlhf_operator.api.trainer_config import TrainerConfig

    output = folder / name
    config = TrainerConfig.model_validate(
        {
            "job": manifest,
            "paths": {
                "output": str(output),
                "inputs": inputs or {},
                "cache": str(cache or folder / "preset-cache"),
            },
            "telemetry": {
                "metricsHost": "127.0.0.1",
                "metricsPort": 0,
                "terminationMessagePath": str(folder / f"{name}.termination"),
            },
            "device": device,
        }
    )
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config.to_manifest()))
    return path, output


# --- running and timing ---------------------------------------------------------------


@dataclass
class Timed:
    """A finished subprocess: exit code, wall seconds, log path."""

    returncode: int
    wall: float
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)


def run_timed(
    command: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 3600,
) -> Timed:
    """Run ``command`` with output to ``log``; wall time from spawn to exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:
        started = time.perf_counter()
        process = subprocess.run(
            list(command),
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
        wall = time.perf_counter() - started
    return Timed(process.returncode, wall, log)


def require_ok(timed: Timed, what: str) -> None:
    if timed.returncode != 0:
        tail = "\n".join(timed.log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"{what} failed (exit {timed.returncode}); log {timed.log}:\n{tail}")


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else float("nan")


def spread(values: Sequence[float]) -> str:
    clean = sorted(v for v in values if v is not None)
    if not clean:
        return "-"
    return f"{clean[0]:.2f}-{clean[-1]:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal too)."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    return str(value)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    try:
        import torch
        import transformers
        import trl

        info.update(
            torch=torch.__version__,
            transformers=transformers.__version__,
            trl=trl.__version__,
            torch_threads=torch.get_num_threads(),
        )
    except ImportError:
        pass
    return info


def save_json(path: str | None, document: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(document, indent=2, default=str))
        print(f"wrote {path}")


def loadavg() -> str:
    """The 1-minute load average (other people's jobs show up here)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"
