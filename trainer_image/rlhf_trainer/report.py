"""A self-contained report in the output folder: SVG curves and report.html."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .charts import line_chart

# Figures worth a curve, in the order they are drawn; anything else logged is listed.
CURVES = (
    ("loss", "training loss"),
    ("eval_loss", "evaluation loss"),
    ("learning_rate", "learning rate"),
    ("eval_accuracy", "evaluation accuracy"),
    ("eval_f1_macro", "evaluation macro F1"),
    ("accuracy", "training pairwise accuracy"),
    ("objective/scores", "reward-model score"),
    ("objective/rlhf_reward", "RLHF reward (score - KL penalty)"),
    ("objective/kl", "KL to the reference"),
    ("policy/clipfrac_avg", "policy clip fraction"),
    ("loss/value_avg", "value loss"),
    ("tokens_per_second", "tokens per second"),
    ("samples_per_second", "samples per second"),
)

# Classification reports in StageResult.details, each drawn as its own block.
CLASSIFICATION_BLOCKS = (
    ("classification", "Evaluation data"),
    (
        "test_classification",
        "Test data (held out: never used for early stopping or checkpoint selection)",
    ),
)


def plot_curves(history: list[dict[str, Any]], folder: Path) -> list[tuple[str, str]]:
    """One SVG per figure that was logged at least twice; returns (file name, title)."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    for key, title in CURVES:
        points = [(row["step"], row[key]) for row in history if key in row]
        if len(points) < 2:
            continue
        name = key.replace("/", "_") + ".svg"
        (folder / name).write_text(line_chart(points, title))
        drawn.append((name, title))
    return drawn


def write_report(
    output_dir: Path,
    config: Any,
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    details: dict[str, Any],
) -> Path:
    plots = plot_curves(history, output_dir / "plots")
    job = config.job
    parts = [
        f"<h1>{html.escape(job.kind)} {html.escape(job.metadata.name)}</h1>",
        f"<p>{html.escape(summary['phase'])} in {summary.get('seconds', '?')} s,"
        f" {summary.get('steps', '?')} steps."
        f" Key figure: <b>{html.escape(summary['keyMetric'])}</b></p>",
        "<h2>Final figures</h2>",
        _table(
            ["figure", "value"],
            [[name, f"{value:.6g}"] for name, value in sorted(summary["metrics"].items())],
        ),
    ]
    if plots:
        parts.append("<h2>Curves</h2>")
        parts.extend(
            f'<figure><img src="plots/{name}" alt="{html.escape(title)}"></figure>'
            for name, title in plots
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
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(job.metadata.name)}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "figure{display:inline-block;margin:4px}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    path = output_dir / "report.html"
    path.write_text(page)
    return path


def _table(header: list[Any], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
