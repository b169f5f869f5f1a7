"""What the RL comparisons (bench/ppo_vs_trl.py, bench/grpo_vs_trl.py) share: our trainer on
a PPOJob manifest, a TRL script in its own process, the runs alternating the order of the
sides over paired seeds, and medians per side.

Each bench keeps what differs: its manifest, its TRL script and settings, its figures.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common


@dataclass
class OurRun:
    """Our trainer's run: wall seconds of the process, seconds of the training call, the
    run summary (``metrics.json``) and the trained policy's folder."""

    wall: float
    train_seconds: float
    summary: dict[str, Any]
    policy: Path


def run_our_trainer(
    manifest: dict[str, Any], paths: dict[str, Path], run: Path, threads: int, what: str
) -> OurRun:
    """``bench/timed_trainer.py ppo`` (``python -m rlhf_trainer ppo`` with a timer around
    ``PPOLoop.train``) on a PPOJob manifest reading the bench's artifacts."""
    config, output = common.write_trainer_config(
        run,
        "ours",
        manifest,
        inputs={
            "policy": str(paths["policy"]),
            "rewardModel": str(paths["reward"]),
            "dataset": str(paths["train_prompts"]),
        },
    )
    timing_file = run / "timing.json"
    timed = common.run_timed(
        [common.PYTHON, str(common.BENCH / "timed_trainer.py"), "ppo", "--config", str(config)],
        run / "ours.log",
        env=common.offline_env(
            {
                "BENCH_TIMING_FILE": str(timing_file),
                "HF_DATASETS_CACHE": str(run / "ds"),
                **common.thread_env(threads),
            }
        ),
    )
    common.require_ok(timed, what)
    return OurRun(
        wall=timed.wall,
        train_seconds=json.loads(timing_file.read_text())["train_seconds"],
        summary=json.loads((output / "metrics.json").read_text()),
        policy=output / "model",
    )


def run_trl_script(
    script: str,
    settings: dict[str, Any],
    run: Path,
    threads: int,
    what: str,
    python: Path | str = common.PYTHON,
) -> tuple[float, dict[str, Any]]:
    """A TRL script (its source written next to the runs) with ``settings`` as its one
    argument, in a process with nothing of ours on its path; returns (wall seconds, the
    ``result.json`` it writes into ``settings["output"]``)."""
    path = run.parent / "trl_script.py"
    path.write_text(script)
    env = common.offline_env({"HF_DATASETS_CACHE": str(run / "ds"), **common.thread_env(threads)})
    env.pop("PYTHONPATH", None)  # nothing of ours in TRL's process
    timed = common.run_timed(
        [str(python), str(path), json.dumps(settings)], run / "trl.log", env=env
    )
    common.require_ok(timed, what)
    return timed.wall, json.loads((Path(settings["output"]) / "result.json").read_text())


def alternating_runs(
    folder: Path,
    sides: Sequence[str],
    runs: int,
    seeds: Callable[[int], int],
    run_side: Callable[[str, Path, int], dict[str, float]],
    describe: Callable[[dict[str, float]], str],
    keep: bool,
) -> dict[str, list[dict[str, float]]]:
    """``runs`` rounds of every side, the order reversed every other round (neither side
    always runs first on a warm or a cold machine); round i uses ``seeds(i)`` on every side.
    ``run_side(side, run folder, seed)`` returns the run's figures; the load average at its
    end is added. Prints one line per run."""
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    width = max(len(side) for side in sides)
    for index in range(runs):
        order = list(sides) if index % 2 == 0 else list(sides)[::-1]
        seed = seeds(index)
        for side in order:
            run = folder / "runs" / f"run{index}-{side}"
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir(parents=True)
            row = run_side(side, run, seed)
            row["load"] = float(common.loadavg())
            results[side].append(row)
            print(
                f"  run {index + 1}/{runs} seed {seed} {side:{width}s}: {describe(row)},"
                f" load {row['load']}",
                flush=True,
            )
            if not keep:
                shutil.rmtree(run, ignore_errors=True)
    return results


def medians(
    results: dict[str, list[dict[str, float]]], keys: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per side, the median of each figure over the runs."""
    return {
        side: {key: common.median([row[key] for row in rows]) for key in keys}
        for side, rows in results.items()
    }


def first_and_last(values: Sequence[float], count: int = 3) -> tuple[float, float]:
    """Means of the first and of the last ``count`` values (a training curve's start and end)."""
    first, last = values[:count], values[-count:]
    return sum(first) / len(first), sum(last) / len(last)
