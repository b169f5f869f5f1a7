"""The end of a local run: a summary table on the terminal and one self-contained HTML
report (the stages' curves inline), whose times are the ones the stage reports give."""

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
    if kind == "DPOJob":
        held_out = next(
            (prefix for prefix in ("test", "eval") if has(f"{prefix}_rewards/accuracies")), None
        )
        parts = []
        if held_out is not None:
            accuracy = metrics[f"{held_out}_rewards/accuracies"]
            margin = metrics.get(f"{held_out}_rewards/margins", float("nan"))
            parts.append(f"implicit reward accuracy {accuracy:.3f}, margin {figure(margin)}")
        if has("eval/win_rate"):
            parts.append(f"win rate {figure(metrics['eval/win_rate'])}")
        if parts:
            return ", ".join(parts)
    return outcome.summary.get("keyMetric", "") or ""


def stage_seconds(outcome: Outcome) -> float:
    """The stage's time as its own report gives it (the trainer's measure, also for a
    stage skipped as finished); the time we waited for it when it wrote none."""
    reported = outcome.summary.get("seconds")
    if outcome.status in ("succeeded", "skipped") and isinstance(reported, (int, float)):
        return float(reported)
    return outcome.seconds


def table_rows(outcomes: list[Outcome]) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            kind_info(outcome.job).stage,
            label(key(outcome.job)),
            outcome.status,
            f"{stage_seconds(outcome):.1f} s",
            key_figures(outcome),
        )
        for outcome in outcomes
    ]


HEADER = ("stage", "job", "status", "time", "key figures")


def table(outcomes: list[Outcome]) -> str:
    rows = [HEADER, *table_rows(outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:0 auto;padding:1em;"
    "line-height:1.4}"
    ".charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,360px),1fr));"
    "gap:8px}"
    "figure{margin:0}svg{width:100%;height:auto;display:block}"
    ".scroll{overflow-x:auto}"
    "table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
)


def write_report(workdir: Path, outcomes: list[Outcome]) -> Path:
    """workdir/report.html: every stage's figures, curves and sample generations, in one
    file (the curves are inline SVG), with links to each stage's own report."""
    parts = ["<h1>RLHF pipeline</h1>", _html_table([HEADER, *table_rows(outcomes)])]
    for outcome in outcomes:
        folder = outcome.folder.name
        parts.append(f"<h2 id='{html.escape(folder)}'>{html.escape(label(key(outcome.job)))}</h2>")
        said = [f"{outcome.status} in {stage_seconds(outcome):.1f} s", key_figures(outcome)]
        parts.append(
            "<p>"
            + " &middot; ".join(html.escape(text) for text in said if text)
            + _links(outcome)
            + "</p>"
        )
        charts = _charts(outcome.folder / "plots")
        if charts:
            parts.append(f"<div class='charts'>{''.join(charts)}</div>")
        parts.append(_samples(outcome))
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>RLHF pipeline</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    path = workdir / "report.html"
    path.write_text(page)
    return path


def _links(outcome: Outcome) -> str:
    """Links to what the stage left: its report (a finished or interrupted stage writes
    one) and, unless it succeeded, its log. Never a link to a file that is not there."""
    folder = outcome.folder.name
    links = []
    if (outcome.folder / "report.html").exists():
        links.append(f"<a href='{html.escape(folder)}/report.html'>stage report</a>")
    if outcome.status not in ("succeeded", "skipped") and (outcome.folder / "trainer.log").exists():
        links.append(f"<a href='{html.escape(folder)}/trainer.log'>trainer log</a>")
    return "".join(f" &middot; {link}" for link in links)


def _charts(plots: Path) -> list[str]:
    """The stage's SVG curves, in its report's order (plots/index.json), to inline."""
    try:
        names = [entry["file"] for entry in json.loads((plots / "index.json").read_text())]
    except (OSError, ValueError, KeyError, TypeError):
        names = sorted(path.name for path in plots.glob("*.svg"))
    charts = []
    for name in names:
        try:
            svg = (plots / Path(name).name).read_text()
        except OSError:
            continue
        if svg.lstrip().startswith("<svg"):
            charts.append(f"<figure>{svg}</figure>")
    return charts


def _html_table(rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows[1:]
    )
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


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
    return f"<h3>{title}</h3><div class='scroll'><table><tr>{head}</tr>{body}</table></div>"
