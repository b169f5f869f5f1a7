"""The end of a local run: a summary table on the terminal and one HTML report."""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..api import kind_info
from .plan import key, label
from .runner import Outcome


def figure(value: float, digits: int = 2) -> str:
    """A figure rounded for reading: a value that rounds to zero prints as 0.00, never as
    -0.00 (a tiny negative estimate, e.g. PPO's k1 KL, is zero at this precision)."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def key_figures(outcome: Outcome) -> str:
    """The figures that say whether a stage learnt, in words a person reads."""
    metrics = outcome.summary.get("metrics") or {}
    kind = outcome.job.kind  # type: ignore[attr-defined]

    def has(*names: str) -> bool:
        return all(isinstance(metrics.get(name), (int, float)) for name in names)

    if "error" in outcome.summary:
        return str(outcome.summary["error"])[:80]
    if kind == "SFTJob":
        if has("eval_accuracy", "eval_f1_macro"):
            return (
                f"accuracy {metrics['eval_accuracy']:.3f}, macro F1 {metrics['eval_f1_macro']:.3f}"
            )
        if has("eval_loss", "eval_perplexity"):
            return (
                f"eval loss {metrics['eval_loss']:.3f}, perplexity {metrics['eval_perplexity']:.2f}"
            )
        if has("train_loss"):
            return f"train loss {metrics['train_loss']:.3f}"
    if kind == "RewardModelJob":
        if has("eval_accuracy"):
            margin = metrics.get("eval_mean_margin", 0)
            return f"pairwise accuracy {metrics['eval_accuracy']:.3f}, margin {figure(margin)}"
        if has("eval_spearman"):
            pearson = metrics.get("eval_pearson", 0)
            return f"spearman {figure(metrics['eval_spearman'], 3)}, pearson {figure(pearson, 3)}"
    if kind == "PPOJob" and has("eval/reward_reference", "eval/reward_policy"):
        return (
            f"reward {figure(metrics['eval/reward_reference'])}"
            f" -> {figure(metrics['eval/reward_policy'])},"
            f" KL {figure(metrics.get('eval/kl', float('nan')))},"
            f" win rate {figure(metrics.get('eval/win_rate', float('nan')))}"
        )
    return outcome.summary.get("keyMetric", "") or ""


def table(outcomes: list[Outcome]) -> str:
    rows = [("stage", "job", "status", "wall time", "key figures")]
    for outcome in outcomes:
        seconds = outcome.seconds or float(outcome.summary.get("seconds") or 0)
        rows.append(
            (
                kind_info(outcome.job).stage,
                label(key(outcome.job)),
                outcome.status,
                f"{seconds:.1f} s",
                key_figures(outcome),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_report(workdir: Path, outcomes: list[Outcome]) -> Path:
    """workdir/report.html: every stage's figures, curves and sample generations."""
    parts = ["<h1>RLHF pipeline</h1>", "<pre>" + html.escape(table(outcomes)) + "</pre>"]
    for outcome in outcomes:
        folder = outcome.folder.name
        parts.append(f"<h2 id='{html.escape(folder)}'>{html.escape(label(key(outcome.job)))}</h2>")
        parts.append(
            f"<p>{html.escape(key_figures(outcome))} &middot;"
            f" <a href='{folder}/report.html'>stage report</a></p>"
        )
        for plot in sorted((outcome.folder / "plots").glob("*.svg")):
            parts.append(
                f"<img src='{folder}/plots/{plot.name}' alt='{html.escape(plot.stem)}' width='360'>"
            )
        parts.append(_samples(outcome))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>RLHF pipeline</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "</style></head><body>" + "\n".join(parts) + "</body></html>"
    )
    path = workdir / "report.html"
    path.write_text(page)
    return path


def _samples(outcome: Outcome) -> str:
    path = outcome.folder / "model" / "samples.jsonl"
    if not path.exists():
        return ""
    rows = [json.loads(line) for line in path.read_text().splitlines()[:12] if line.strip()]
    if not rows:
        return ""
    if "policy" in rows[0]:
        header = ["prompt", "before PPO (SFT policy)", "score", "after PPO", "score"]
        cells = [
            [
                r["prompt"],
                r["reference"],
                figure(r["reference_score"]),
                r["policy"],
                figure(r["policy_score"]),
            ]
            for r in rows
        ]
        title = "Same prompts, before and after PPO"
    else:
        header = ["prompt", "completion"]
        cells = [[r.get("prompt", ""), r.get("completion", "")] for r in rows]
        title = "Sample generations"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in cells
    )
    return f"<h3>{title}</h3><table><tr>{head}</tr>{body}</table>"
