"""The benchmark scripts still run end to end, on tiny settings.

They run rarely, some on a borrowed GPU machine with minutes of budget: a script broken
by a trainer or operator change should fail here, not there. Only that they work and
report sane figures is asserted; how fast is for bench/RESULTS.md, never for a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def _run(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_gpu_throughput_script_runs_every_variant_on_a_tiny_cpu_config(tmp_path) -> None:
    output = tmp_path / "gpu.json"
    _run("gpu_throughput.py", "--cpu-smoke", "--json", str(output), timeout=600)
    document = json.loads(output.read_text())
    assert document["smoke"] is True
    measured = {row["variant"]: row for row in document["sft"] if "tokens_per_second" in row}
    assert {"ours", "ours-packing", "trl", "trl-packing"} <= set(measured)
    for row in measured.values():
        assert row["tokens_per_second"] > 0 and row["step_seconds"] > 0
    # Packing puts more tokens in a step than padding to the longest row.
    assert measured["ours-packing"]["tokens_per_step"] > measured["ours"]["tokens_per_step"]
    assert not [row for row in document["sft"] if "error" in row]
    assert document["ppo"]["episodes_per_second"] > 0


def test_operator_scale_script_measures_a_small_burst_and_idle(tmp_path) -> None:
    output = tmp_path / "scale.json"
    _run(
        "operator_scale.py",
        *("--jobs", "6", "--idle-jobs", "10", "--idle-seconds", "3", "--settle", "1"),
        *("--profile", "0", "--workdir", str(tmp_path / "work"), "--json", str(output)),
        timeout=600,
    )
    document = json.loads(output.read_text())
    burst, idle = document["burst"], document["idle"]
    assert burst["jobs_seen"] == 6 and burst["complete"]
    assert 0 < burst["latency_p50"] <= burst["latency_p99"] <= burst["latency_max"]
    # Every job cost at least its three creates (ConfigMap, claim, Job), as the audit log
    # counted them for the operator's own ServiceAccount.
    kinds = burst["operator_requests_by_kind"]
    assert {"create configmaps", "create persistentvolumeclaims", "create jobs"} <= set(kinds)
    assert burst["operator_requests_per_job"] >= 3
    assert idle["jobs"] == 10 and sum(idle["phases"].values()) == 10
    assert idle["operator_rss_mb"] > 0


def test_comparison_scripts_parse_their_options() -> None:
    """The TRL comparisons take minutes even on tiny settings (they train an SFT policy and
    a reward model first), so only their option parsing and imports are checked here."""
    for script, option in (
        ("grpo_vs_trl.py", "--samples"),
        ("ppo_vs_trl.py", "--trl-gc"),
        ("trainer_overhead.py", "--dpo-steps"),
    ):
        assert option in _run(script, "--help", timeout=120).stdout
