"""The stage's report: one self-contained report.html in the output folder.

The curves are inline SVG (no image files to lose when the page is mailed or attached),
the page reads on a phone (viewport, charts that scale, tables that scroll), and every
chart says what its axes measure. The same SVGs are also written to plots/ (listed in
plots/index.json, in report order) for the pipeline report and for anyone embedding them.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .charts import Series, chart

PLOTS = "plots"
PLOT_INDEX = "index.json"


@dataclass(frozen=True)
class Curve:
    """One chart: the logged figures it draws (name, legend) and its y axis."""

    file: str
    title: str
    figures: tuple[tuple[str, str], ...]
    unit: str
    log_scale: bool = False
    """Allow a log y axis (used when the figures span two orders of magnitude)."""


LOSS = "loss"  # the y label is chosen per run by loss_unit()
CURVES = (
    Curve("loss", "loss", (("loss", "train"), ("eval_loss", "eval")), LOSS, log_scale=True),
    Curve(
        "learning_rate",
        "learning rate",
        (("learning_rate", "learning rate"), ("lr", "learning rate")),  # Trainer's, PPO's
        "learning rate",
    ),
    Curve(
        "accuracy",
        "accuracy",
        (("accuracy", "train (pairs)"), ("eval_accuracy", "eval")),
        "fraction correct",
    ),
    Curve("eval_f1_macro", "evaluation macro F1", (("eval_f1_macro", "eval"),), "F1 (0 to 1)"),
    Curve(
        "objective_scores",
        "reward",
        (("objective/scores", "reward-model score"), ("objective/rlhf_reward", "minus KL penalty")),
        "reward-model score",
    ),
    Curve("objective_kl", "KL to the reference", (("objective/kl", "KL"),), "KL (nats)"),
    Curve(
        "policy_clipfrac_avg",
        "policy clip fraction",
        (("policy/clipfrac_avg", "clipped"),),
        "fraction of ratios clipped",
    ),
    Curve(
        "ppo_losses",
        "PPO losses",
        (("loss/policy_avg", "policy"), ("loss/value_avg", "value")),
        "loss",
    ),
    Curve(
        "ppo_phase_seconds",
        "seconds per phase of an update",
        (
            ("time/generation", "generation"),
            ("time/scoring", "scoring"),
            ("time/policy_logprobs", "policy log-probs"),
            ("time/reference_logprobs", "reference log-probs"),
            ("time/update", "policy/value update"),
            ("time/total", "whole update"),
        ),
        "seconds",
        log_scale=True,
    ),
    Curve(
        "ppo_response_length",
        "response length",
        (("completions/mean_length", "mean"),),
        "tokens",
    ),
    Curve(
        "ppo_response_shares",
        "truncated responses and tied groups",
        (
            ("completions/clipped_ratio", "hit the length limit"),
            ("objective/frac_reward_zero_std", "groups with zero reward variance"),
        ),
        "fraction",
    ),
    Curve(
        "dpo_reward_accuracy",
        "implicit reward accuracy",
        (("rewards/accuracies", "train pairs"), ("eval_rewards/accuracies", "eval pairs")),
        "fraction of pairs ranked right",
    ),
    Curve(
        "dpo_reward_margin",
        "implicit reward margin",
        (("rewards/margins", "train pairs"), ("eval_rewards/margins", "eval pairs")),
        "beta x log-ratio, chosen minus rejected",
    ),
    Curve("tokens_per_second", "tokens per second", (("tokens_per_second", "tokens"),), "tokens/s"),
    Curve(
        "samples_per_second",
        "samples per second",
        (("samples_per_second", "samples"),),
        "samples/s",
    ),
)

# Classification reports in StageResult.details, each drawn as its own block.
CLASSIFICATION_BLOCKS = (
    ("classification", "Evaluation data"),
    (
        "test_classification",
        "Test data (held out: never used for early stopping or checkpoint selection)",
    ),
)

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:0 auto;padding:1em;"
    "line-height:1.4}"
    ".charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,420px),1fr));"
    "gap:8px}"
    "figure{margin:0}svg{width:100%;height:auto;display:block}"
    ".scroll{overflow-x:auto}"
    "table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "pre{white-space:pre-wrap;overflow-wrap:anywhere}"
)


def page(title: str, body: Sequence[str]) -> str:
    """A whole HTML document: nothing it shows lives in another file."""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def loss_unit(history: list[dict[str, Any]], kind: str) -> str:
    """PPO minimises its clipped objective; a reward model on ratings, the mean squared
    error; everything else, a cross-entropy (tokens, classes, or preferred vs rejected)."""
    if kind == "PPOJob":
        return "policy + value loss"
    if any("eval_mse" in row or "eval_spearman" in row for row in history):
        return "mean squared error"
    return "cross-entropy (nats)"


def x_axis(kind: str) -> tuple[str, str]:
    """The history column the curves run along, and its label: PPO against episodes."""
    if kind == "PPOJob":
        return "episode", "episodes (prompts answered)"
    return "step", "optimizer step"


def draw_curves(history: list[dict[str, Any]], kind: str) -> list[tuple[Curve, str]]:
    """Every chart with a figure logged at least twice: (curve, SVG text), in report order."""
    x_key, x_label = x_axis(kind)
    drawn = []
    for curve in CURVES:
        series = [
            Series(
                legend, [(row[x_key], row[name]) for row in history if {x_key, name} <= set(row)]
            )
            for name, legend in curve.figures
        ]
        if not any(len(item.points) >= 2 for item in series):
            continue
        series = [item for item in series if item.points]
        unit = loss_unit(history, kind) if curve.unit == LOSS else curve.unit
        if curve.file == "samples_per_second" and kind == "PPOJob":
            unit = "episodes/s"
        svg = chart(series, curve.title, x_label, unit, log_scale=curve.log_scale)
        drawn.append((curve, svg))
    return drawn


def write_plots(folder: Path, drawn: list[tuple[Curve, str]]) -> None:
    """plots/NAME.svg for each chart and plots/index.json listing them in report order;
    charts from an earlier run that this one did not draw are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.svg"):
        old.unlink()
    for curve, svg in drawn:
        (folder / f"{curve.file}.svg").write_text(svg)
    index = [{"file": f"{curve.file}.svg", "title": curve.title} for curve, _ in drawn]
    (folder / PLOT_INDEX).write_text(json.dumps(index, indent=2))


def write_report(
    output_dir: Path,
    config: Any,
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    details: dict[str, Any],
) -> Path:
    job = config.job
    drawn = draw_curves(history, job.kind)
    write_plots(output_dir / PLOTS, drawn)
    parts = [
        f"<h1>{html.escape(job.kind)} {html.escape(job.metadata.name)}</h1>",
        f"<p>{html.escape(headline(summary))}</p>",
    ]
    if summary.get("metrics"):
        parts.append("<h2>Final figures</h2>")
        parts.append(
            _table(
                ["figure", "value"],
                [[name, f"{value:.6g}"] for name, value in sorted(summary["metrics"].items())],
            )
        )
    if drawn:
        parts.append("<h2>Curves</h2>")
        parts.append(
            "<p>Faint: every logged value; solid: smoothed (an exponential moving average).</p>"
            if any('class="smoothed"' in svg for _, svg in drawn)
            else ""
        )
        parts.append(
            "<div class='charts'>"
            + "".join(f"<figure>{svg}</figure>" for _, svg in drawn)
            + "</div>"
        )
    for key, heading in CLASSIFICATION_BLOCKS:
        if key not in details:
            continue
        report = details[key]
        names = list(report["per_class"])
        parts.append(f"<h2>{heading}</h2>")
        parts.append("<h3>Per class</h3>")
        parts.append(
            _table(
                ["class", "precision", "recall", "F1", "support"],
                [
                    [
                        n,
                        f"{c['precision']:.3f}",
                        f"{c['recall']:.3f}",
                        f"{c['f1']:.3f}",
                        c["support"],
                    ]
                    for n, c in report["per_class"].items()
                ],
            )
        )
        parts.append("<h3>Confusion matrix (rows: truth, columns: prediction)</h3>")
        parts.append(
            _table(
                ["", *names],
                [[n, *row] for n, row in zip(names, report["confusion_matrix"], strict=True)],
            )
        )
    if details.get("samples"):
        parts.append("<h2>Sample generations</h2>")
        rows = details["samples"]
        columns = list(rows[0])
        parts.append(
            _table(
                columns,
                [
                    [row[c] if not isinstance(row[c], float) else f"{row[c]:.3f}" for c in columns]
                    for row in rows
                ],
            )
        )
    parts.append(
        "<h2>Spec</h2><pre>" + html.escape(json.dumps(job.spec.to_manifest(), indent=2)) + "</pre>"
    )
    path = output_dir / "report.html"
    path.write_text(page(f"{job.kind} {job.metadata.name}", parts))
    return path


def headline(summary: dict[str, Any]) -> str:
    """``Succeeded in 41.2 s, 300 steps. Key figure: eval_loss=1.23``"""
    text = f"{summary.get('phase', '?')} in {summary.get('seconds', '?')} s"
    text += f", {summary.get('steps', '?')} steps."
    if summary.get("keyMetric"):
        text += f" Key figure: {summary['keyMetric']}"
    if summary.get("note"):
        text += f" {summary['note']}"
    return text


def _table(header: list[Any], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"
