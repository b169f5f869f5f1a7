"""RLHF / Training: progress, loss, learning rate, gradient norm, accuracy, throughput."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.builders.timeseries import Panel as TimeseriesPanel

from .common import (
    JOB_LEGEND,
    JOBS,
    bargauge,
    query,
    rlhf_dashboard,
    row,
    table_legend,
    thresholds,
    timeseries,
)

KIND_LEGEND = f"{{{{kind}}}} {JOB_LEGEND}"


def dashboard() -> Dashboard:
    return (
        rlhf_dashboard(
            "rlhf-training",
            "RLHF / Training",
            "Training curves of SFT, reward-model and PPO jobs: progress, loss, learning rate,"
            " throughput.",
        )
        .with_row(row("Progress"))
        .with_panel(
            bargauge(
                "Progress",
                "Completed fraction of training (rlhf_training_progress_ratio).",
                query(
                    "max by (rlhf_namespace, rlhf_job, kind)"
                    f" (rlhf_training_progress_ratio{{{JOBS}}})",
                    KIND_LEGEND,
                ),
                width=12,
            )
            .unit("percentunit")
            .min(0)
            .max(1)
            .thresholds(thresholds("blue", (1, "green")))
        )
        .with_panel(
            bargauge(
                "Estimated time remaining",
                "Estimated seconds until training ends, from the recent step rate"
                " (rlhf_training_remaining_seconds).",
                query(
                    "max by (rlhf_namespace, rlhf_job, kind)"
                    f" (rlhf_training_remaining_seconds{{{JOBS}}})",
                    KIND_LEGEND,
                ),
                width=12,
            )
            .unit("s")
            .min(0)
            .thresholds(thresholds("green"))
        )
        .with_panel(
            timeseries(
                "Step",
                "Optimizer steps completed and planned.",
                query(
                    f"max by (rlhf_namespace, rlhf_job) (rlhf_training_step{{{JOBS}}})",
                    f"step {JOB_LEGEND}",
                ),
                query(
                    f"max by (rlhf_namespace, rlhf_job) (rlhf_training_total_steps{{{JOBS}}})",
                    f"total {JOB_LEGEND}",
                ),
                width=8,
            ).decimals(0)
        )
        .with_panel(
            timeseries(
                "Steps per second",
                "Rate of rlhf_training_steps_total over 5 minutes.",
                query(
                    "max by (rlhf_namespace, rlhf_job)"
                    f" (rate(rlhf_training_steps_total{{{JOBS}}}[5m]))",
                    JOB_LEGEND,
                ),
                width=8,
            )
        )
        .with_panel(
            timeseries(
                "Epoch",
                "Epochs completed (fractional).",
                query(
                    f"max by (rlhf_namespace, rlhf_job) (rlhf_training_epoch{{{JOBS}}})",
                    JOB_LEGEND,
                ),
                width=8,
            )
        )
        .with_row(row("Optimisation"))
        .with_panel(
            timeseries(
                "Training loss",
                "Training loss of the latest logging window (rlhf_training_loss). PPO: policy"
                " loss + valueCoef x value loss.",
                query(
                    f"avg by (rlhf_namespace, rlhf_job, kind) (rlhf_training_loss{{{JOBS}}})",
                    KIND_LEGEND,
                ),
                width=12,
            ).legend(table_legend("lastNotNull", "min"))
        )
        .with_panel(
            timeseries(
                "Learning rate",
                "Current learning rate (rlhf_training_learning_rate).",
                query(
                    "avg by (rlhf_namespace, rlhf_job, kind)"
                    f" (rlhf_training_learning_rate{{{JOBS}}})",
                    KIND_LEGEND,
                ),
                width=12,
            ).unit("none")
        )
        .with_panel(
            timeseries(
                "Gradient norm",
                "Gradient norm before clipping (rlhf_training_gradient_norm), SFT, reward model"
                " and PPO.",
                query(
                    "avg by (rlhf_namespace, rlhf_job, kind)"
                    f" (rlhf_training_gradient_norm{{{JOBS}}})",
                    KIND_LEGEND,
                ),
                width=12,
            )
        )
        .with_panel(
            timeseries(
                "Training accuracy",
                "SFT's mean token accuracy and the reward model's pairwise accuracy on training"
                " batches (rlhf_train_metric, which holds every logged figure without a series"
                " of its own: edit the metric matcher to plot others, e.g. entropy, margin,"
                " policy/approxkl_avg).",
                query(
                    "avg by (rlhf_namespace, rlhf_job, kind, metric) (rlhf_train_metric{"
                    f'{JOBS}, metric=~"mean_token_accuracy|accuracy"}})',
                    f"{{{{metric}}}} {KIND_LEGEND}",
                ),
                width=12,
            )
        )
        .with_row(row("Throughput"))
        .with_panel(
            throughput(
                "Tokens per second",
                "Training throughput in tokens: rate of rlhf_training_tokens_total over 5"
                " minutes (trainers that count tokens: SFT and reward model on TRL).",
                "rlhf_training_tokens_total",
            )
        )
        .with_panel(
            throughput(
                "Samples per second",
                "Training throughput in examples (SFT, reward model): rate of"
                " rlhf_training_samples_total over 5 minutes.",
                "rlhf_training_samples_total",
            )
        )
        .with_panel(
            throughput(
                "PPO episodes per second",
                "PPO throughput in episodes (prompts answered and trained on): rate of"
                " rlhf_ppo_episodes_total over 5 minutes.",
                "rlhf_ppo_episodes_total",
            )
        )
    )


def throughput(title: str, description: str, counter: str) -> TimeseriesPanel:
    """The 5-minute rate of a trainer's counter, per job, with its mean and last value."""
    return (
        timeseries(
            title,
            description,
            query(
                f"max by (rlhf_namespace, rlhf_job, kind) (rate({counter}{{{JOBS}}}[5m]))",
                KIND_LEGEND,
            ),
            width=8,
        )
        .unit("none")
        .legend(table_legend("mean", "lastNotNull"))
    )
