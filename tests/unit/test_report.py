"""The reports: one self-contained HTML file per stage and for the pipeline, readable on a
narrow screen, with curves a person can read; a resumed run keeps its early curves."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rlhf_operator.local.runner import Outcome
from rlhf_operator.local.summary import table
from rlhf_operator.local.summary import write_report as write_pipeline_report
from rlhf_operator.manifests import load_jobs
from rlhf_trainer.report import draw_curves, write_report
from rlhf_trainer.telemetry import Telemetry, read_history

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "local" / "pipeline.yaml"
SVG = "{http://www.w3.org/2000/svg}"


def _config(kind: str, name: str = "demo") -> Any:
    spec = SimpleNamespace(to_manifest=lambda: {"training": {"maxSteps": 300}})
    return SimpleNamespace(
        job=SimpleNamespace(kind=kind, metadata=SimpleNamespace(name=name), spec=spec)
    )


def _sft_history() -> list[dict[str, Any]]:
    """A loss falling from 3 to 0.003, evaluated every 50 steps, with throughput."""
    rows: list[dict[str, Any]] = []
    for step in range(10, 301, 10):
        rows.append(
            {
                "step": step,
                "loss": 3.0 * 10 ** (-step / 100) * (1.1 if step % 20 else 0.9),
                "learning_rate": 1e-3 * (1 - step / 300),
                "samples_per_second": 120.0,
                "tokens_per_second": 4000.0,
            }
        )
        if step % 50 == 0:
            rows.append({"step": step, "eval_loss": 3.2 * 10 ** (-step / 100)})
    return rows


def _svgs(page: str) -> list[ElementTree.Element]:
    return [ElementTree.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", page, re.S)]


def _texts(svg: ElementTree.Element) -> list[str]:
    return [text.text or "" for text in svg.iter(f"{SVG}text")]


def _by_title(page: str) -> dict[str, ElementTree.Element]:
    return {svg.findtext(f"{SVG}title") or "": svg for svg in _svgs(page)}


def test_the_stage_report_is_one_self_contained_page_for_any_screen(tmp_path: Path) -> None:
    summary = {"phase": "Succeeded", "seconds": 41.2, "steps": 300, "keyMetric": "eval_loss=0.003"}
    summary["metrics"] = {"eval_loss": 0.003}
    path = write_report(tmp_path, _config("SFTJob"), summary, _sft_history(), {})
    page = path.read_text()
    # Nothing it shows lives in another file: the curves are inline SVG.
    assert "<img" not in page and "src=" not in page and "<link" not in page
    charts = _by_title(page)
    assert {"loss", "learning rate", "tokens per second", "samples per second"} <= set(charts)
    # A narrow screen: the viewport is the device's, charts scale (viewBox), tables scroll.
    assert "name='viewport' content='width=device-width" in page
    assert "svg{width:100%;height:auto" in page and "overflow-x:auto" in page
    assert all(svg.get("viewBox") for svg in charts.values())
    assert "Succeeded in 41.2 s, 300 steps." in page
    # The same charts as files, listed in report order, for the pipeline report.
    index = json.loads((tmp_path / "plots" / "index.json").read_text())
    assert [entry["title"] for entry in index][:2] == ["loss", "learning rate"]
    assert all((tmp_path / "plots" / entry["file"]).exists() for entry in index)


def test_train_and_eval_loss_share_a_log_scale_chart_with_units(tmp_path: Path) -> None:
    page = write_report(
        tmp_path, _config("SFTJob"), {"phase": "Succeeded"}, _sft_history(), {}
    ).read_text()
    loss = _by_title(page)["loss"]
    texts = _texts(loss)
    assert {"train", "eval"} <= set(texts)  # one chart, a legend entry each
    assert "cross-entropy (nats) (log scale)" in texts  # fell 1000x: a log scale
    assert "optimizer step" in texts
    lines = {line.get("class") for line in loss.iter(f"{SVG}polyline")}
    assert lines == {"raw", "smoothed"}  # 30 noisy points: smoothed over a faint raw line
    assert "samples/s" in _texts(_by_title(page)["samples per second"])
    assert "learning rate (log scale)" not in _texts(_by_title(page)["learning rate"])


def test_ppo_curves_run_against_episodes(tmp_path: Path) -> None:
    history = [
        {
            "step": update,
            "episode": 64.0 * update,
            "objective/scores": -1.0 + update / 10,
            "objective/rlhf_reward": -1.1 + update / 10,
            "objective/kl": update / 100,
            "loss": (-1) ** update * 0.5,
            "lr": 1e-5,
            "samples_per_second": 30.0,
        }
        for update in range(1, 21)
    ]
    page = write_report(
        tmp_path, _config("PPOJob"), {"phase": "Succeeded"}, history, {}
    ).read_text()
    reward = _by_title(page)["reward"]
    texts = _texts(reward)
    assert "episodes (prompts answered)" in texts and "reward-model score" in texts
    assert "1000" in texts  # ticks in episodes (64 to 1280), not updates (1 to 20)
    assert "episodes/s" in _texts(_by_title(page)["samples per second"])
    assert "KL (nats)" in _texts(_by_title(page)["KL to the reference"])
    assert "policy + value loss" in _texts(_by_title(page)["loss"])  # not a cross-entropy
    assert "learning rate" in _by_title(page)  # PPO logs it as lr


def test_ppo_report_charts_phase_seconds_and_response_length() -> None:
    history = [
        {
            "step": update,
            "episode": 8.0 * update,
            "time/generation": 2.0,
            "time/scoring": 0.2,
            "time/policy_logprobs": 0.1,
            "time/reference_logprobs": 0.1,
            "time/update": 1.0,
            "time/total": 3.5,
            "completions/mean_length": 10.0 + update,
            "completions/clipped_ratio": 0.1,
            "objective/frac_reward_zero_std": 0.25,
        }
        for update in range(1, 4)
    ]
    drawn = {
        curve.file: ElementTree.fromstring(svg) for curve, svg in draw_curves(history, "PPOJob")
    }
    phases = _texts(drawn["ppo_phase_seconds"])
    for legend in ("generation", "scoring", "reference log-probs", "policy/value update"):
        assert legend in phases
    assert "seconds" in phases
    assert "tokens" in _texts(drawn["ppo_response_length"])
    shares = _texts(drawn["ppo_response_shares"])
    assert "hit the length limit" in shares and "groups with zero reward variance" in shares


def test_a_regression_loss_is_labelled_as_squared_error() -> None:
    history = [{"step": s, "loss": 1.0 / s, "eval_spearman": 0.5} for s in range(1, 5)]
    ((_, svg),) = [
        drawn for drawn in draw_curves(history, "RewardModelJob") if drawn[0].file == "loss"
    ]
    assert "mean squared error" in svg


def test_no_zero_rate_after_the_last_step() -> None:
    """transformers ends with a summary log at the last step; samples/s came out 0 there.
    The TelemetryCallback is fed the log sequence of a real run."""
    from rlhf_trainer.hf import TelemetryCallback

    telemetry = Telemetry("team", "demo", "SFTJob", stage="sft", serve=False)
    callback = TelemetryCallback(SimpleNamespace(telemetry=telemetry), samples_per_step=8)
    state = SimpleNamespace(global_step=0, epoch=0.0, max_steps=20)
    callback.on_train_begin(None, state, None)
    for step in range(1, 21):
        state.global_step = step
        callback.on_step_end(None, state, None)
        if step % 10 == 0:
            callback.on_log(None, state, None, {"loss": 1.0 / step, "num_tokens": 300.0 * step})
    callback.on_log(None, state, None, {"eval_loss": 0.1, "eval_samples_per_second": 50.0})
    callback.on_log(None, state, None, {"train_runtime": 2.0, "train_loss": 0.07})
    rates = [row["samples_per_second"] for row in telemetry.history if "samples_per_second" in row]
    assert len(rates) == 2 and all(rate > 0 for rate in rates)
    tokens = [row["tokens_per_second"] for row in telemetry.history if "tokens_per_second" in row]
    assert len(tokens) == 2 and all(rate > 0 for rate in tokens)


def test_a_resumed_run_keeps_the_curves_before_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    first = Telemetry("team", "demo", "SFTJob", serve=False)
    first.keep_history(path, None)
    for step in range(10, 71, 10):
        first.record_metrics({"loss": 10.0 / step}, step)
    with path.open("a") as file:
        file.write('{"step": 80, "lo')  # killed mid-write

    # Resumed from checkpoint-50: the rows up to 50 come back; 60 and 70 are trained again.
    second = Telemetry("team", "demo", "SFTJob", serve=False)
    second.keep_history(path, 50)
    for step in range(60, 101, 10):
        second.record_metrics({"loss": 9.0 / step}, step)
    steps = [row["step"] for row in second.history]
    assert steps == list(range(10, 101, 10))
    assert second.history[4]["loss"] == 10.0 / 50 and second.history[5]["loss"] == 9.0 / 60
    assert read_history(path) == second.history  # what a third attempt would reload

    # A run with no checkpoint to resume starts its history anew.
    third = Telemetry("team", "demo", "SFTJob", serve=False)
    third.keep_history(path, None)
    third.record_metrics({"loss": 1.0}, 10)
    assert read_history(path) == [{"step": 10, "loss": 1.0}]


def _outcomes(tmp_path: Path) -> list[Outcome]:
    sft, rm, _ = load_jobs([DEMO])
    done = tmp_path / "demo-sft"
    (done / "plots").mkdir(parents=True)
    for name in ("loss", "learning_rate"):
        (done / "plots" / f"{name}.svg").write_text(
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><title>{name}</title></svg>'
        )
    (done / "plots" / "index.json").write_text(
        json.dumps([{"file": "learning_rate.svg"}, {"file": "loss.svg"}])
    )
    (done / "report.html").write_text("<html></html>")
    stopped = tmp_path / "demo-rm"
    stopped.mkdir()
    (stopped / "trainer.log").write_text(
        "rlhf-trainer: SIGTERM: saving a checkpoint and stopping\n"
    )
    summary = {"phase": "Succeeded", "seconds": 41.2, "metrics": {"train_loss": 0.5}}
    return [
        Outcome(sft, done, "succeeded", 43.9, summary),  # 43.9: our wait, start-up included
        Outcome(rm, stopped, "interrupted", 3.25, {}, 143),
    ]


def test_the_pipeline_report_inlines_the_curves_and_links_only_what_exists(tmp_path: Path) -> None:
    page = write_pipeline_report(tmp_path, _outcomes(tmp_path)).read_text()
    assert "<img" not in page and "name='viewport'" in page
    titles = [svg.findtext(f"{SVG}title") for svg in _svgs(page)]
    assert titles == ["learning_rate", "loss"]  # inline, in the stage report's order
    links = re.findall(r"href='([^']+)'", page)
    assert links == ["demo-sft/report.html", "demo-rm/trainer.log"]
    assert all((tmp_path / link).exists() for link in links)  # no broken link


def test_stage_and_table_times_agree(tmp_path: Path) -> None:
    outcomes = _outcomes(tmp_path)
    printed = table(outcomes)
    page = write_pipeline_report(tmp_path, outcomes).read_text()
    # The finished stage: the time its own report gives (41.2 s), in the table and the page.
    assert "41.2 s" in printed and "43.9" not in printed
    assert "<td>41.2 s</td>" in page and "succeeded in 41.2 s" in page
    # The interrupted one wrote no summary: the time we waited for it.
    assert "3.2 s" in printed or "3.3 s" in printed
    assert not math.isnan(outcomes[1].seconds)
