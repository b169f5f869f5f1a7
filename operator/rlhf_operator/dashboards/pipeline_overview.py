"""RLHF / Pipeline overview: jobs by phase, progress, durations, failures."""

from __future__ import annotations

from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.builders.stat import Panel as StatPanel
from grafana_foundation_sdk.builders.timeseries import Panel as TimeseriesPanel
from grafana_foundation_sdk.models.common import StackingMode

from .common import (
    JOB_LEGEND,
    JOBS,
    bargauge,
    query,
    rlhf_dashboard,
    row,
    stat,
    table_legend,
    thresholds,
    timeseries,
)

PHASE_COLORS = {"Running": "blue", "Waiting": "yellow", "Succeeded": "green", "Failed": "red"}


def dashboard() -> Dashboard:
    board = rlhf_dashboard(
        "rlhf-pipeline-overview",
        "RLHF / Pipeline overview",
        "SFT, reward-model and PPO jobs: how many in each phase, how long they take, why they"
        " fail.",
    ).with_row(row("Jobs"))
    for phase, color in PHASE_COLORS.items():
        board.with_panel(jobs_in_phase(phase, color))
    return (
        board.with_panel(
            timeseries(
                "Jobs by kind and phase",
                "rlhf_operator_jobs: SFTJob, RewardModelJob and PPOJob objects by phase (max over"
                " operator replicas: only the active one counts jobs).",
                query("max by (kind, phase) (rlhf_operator_jobs)", "{{kind}} {{phase}}"),
                width=12,
            )
            .decimals(0)
            .fill_opacity(60)
            .stacking(stacking_normal())
            .legend(table_legend("lastNotNull"))
        )
        .with_panel(
            bargauge(
                "Training progress",
                "Completed fraction of each training job (from its trainer pod).",
                query(
                    "max by (rlhf_namespace, rlhf_job, kind)"
                    f" (rlhf_training_progress_ratio{{{JOBS}}})",
                    f"{{{{kind}}}} {JOB_LEGEND}",
                ),
                width=12,
            )
            .unit("percentunit")
            .min(0)
            .max(1)
            .thresholds(thresholds("blue", (1, "green")))
        )
        .with_row(row("Durations and failures"))
        .with_panel(
            timeseries(
                "Mean job duration by kind and outcome",
                "Wall time from start to the end of training, averaged over the jobs that ended"
                " since the operator started (rlhf_operator_job_duration_seconds).",
                query(
                    "sum by (kind, phase) (rlhf_operator_job_duration_seconds_sum)"
                    " / sum by (kind, phase) (rlhf_operator_job_duration_seconds_count)",
                    "{{kind}} {{phase}}",
                ),
                width=12,
            )
            .unit("s")
            .legend(table_legend("lastNotNull"))
        )
        .with_panel(
            quantiles_by_kind(
                "Job duration p50 / p90 by kind",
                "Quantiles of job wall time (bucketed) over the jobs that ended since the"
                " operator started.",
                "rlhf_operator_job_duration_seconds_bucket",
            )
        )
        .with_panel(
            timeseries(
                "Job failures by reason (last hour)",
                "Failed jobs in the trailing hour by kind and reason"
                " (rlhf_operator_job_failures_total); 0 when none failed.",
                query(
                    "sum by (kind, reason) (increase(rlhf_operator_job_failures_total[1h]))"
                    " or on() vector(0)",
                    "{{kind}} {{reason}}",
                ),
                width=12,
            )
            .decimals(0)
            .legend(table_legend("lastNotNull", "max"))
        )
        .with_panel(
            quantiles_by_kind(
                "Job creation latency p50 / p90",
                "From a job's creation to its batch Job being created"
                " (rlhf_operator_job_creation_latency_seconds, since the operator started).",
                "rlhf_operator_job_creation_latency_seconds_bucket",
            )
        )
    )


def jobs_in_phase(phase: str, color: str) -> StatPanel:
    return (
        stat(
            f"{phase} jobs",
            f"Jobs (all kinds) the operator currently sees in phase {phase}.",
            query(f'sum(max by (kind) (rlhf_operator_jobs{{phase="{phase}"}}))', phase),
            width=6,
            height=4,
        )
        .decimals(0)
        .thresholds(thresholds(color))
    )


def quantiles_by_kind(title: str, description: str, buckets: str) -> TimeseriesPanel:
    """p50 and p90 per kind of a histogram the operator keeps since it started."""
    return (
        timeseries(
            title,
            description,
            *(
                query(
                    f"histogram_quantile({quantile}, sum by (le, kind) ({buckets}))",
                    f"p{round(quantile * 100)} {{{{kind}}}}",
                )
                for quantile in (0.5, 0.9)
            ),
            width=12,
        )
        .unit("s")
        .legend(table_legend("lastNotNull"))
    )


def stacking_normal() -> StackingConfig:
    return StackingConfig().mode(StackingMode.NORMAL).group("A")
