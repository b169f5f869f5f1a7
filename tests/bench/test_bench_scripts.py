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


def test_grpo_comparison_runs_both_sides_on_tiny_settings(tmp_path) -> None:
    """bench/grpo_vs_trl.py end to end (bench/rl_runs.py, which ppo_vs_trl.py shares): a
    5-step SFT policy and reward model, one run of 2 updates per side, the scoring-form
    measurement, medians and the JSON."""
    output = tmp_path / "grpo.json"
    _run(
        "grpo_vs_trl.py",
        *("--runs", "1", "--updates", "2", "--prompts-per-rollout", "4", "--samples", "2"),
        *("--sft-steps", "5", "--rm-steps", "5", "--train-prompts", "16", "--eval-prompts", "8"),
        *("--workdir", str(tmp_path / "work"), "--json", str(output)),
        timeout=900,
    )
    document = json.loads(output.read_text())
    for side in ("ours", "trl"):
        [run] = document["runs"][side]
        assert run["updates"] == 2, (side, run)
        assert run["episodes_per_second"] > 0 and run["train_seconds"] > 0
        assert document["medians"][side]["updates"] == 2
    forms = document["scoring_forms"]
    assert abs(forms["offset"] - (forms["ours_form"] - forms["trl_form"])) < 1e-4
    # The tiny tokenizer has a BOS that TRL's add_special_tokens=False drops: other inputs.
    assert forms["bos"] == 1.0 and forms["ours_form"] != forms["trl_form"]
    assert document["speed_ratio"] > 0


def test_comparison_scripts_parse_their_options() -> None:
    """The PPO comparison needs TRL 1.12 in a venv of its own and takes minutes even on tiny
    settings, so only the option parsing and imports of every comparison are checked here."""
    for script, option in (
        ("grpo_vs_trl.py", "--samples"),
        ("ppo_vs_trl.py", "--trl-gc"),
        ("trainer_overhead.py", "--dpo-steps"),
    ):
        assert option in _run(script, "--help", timeout=120).stdout
