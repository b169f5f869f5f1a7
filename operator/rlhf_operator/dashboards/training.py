"""RLHF / Training: progress, loss, learning rate, gradient norm, accuracy, throughput, where
an RL update's time goes (seconds per phase, generation tokens/s, response length, truncated
responses, tied groups, GPU memory per phase) and DPO's implicit rewards."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.builders.timeseries import Panel as TimeseriesPanel
from grafana_foundation_sdk.models import common as common_models

from .common import (
    JOB_LEGEND,
    JOBS,
    bargauge,
    override,
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
            "Training curves of SFT, reward-model, PPO and DPO jobs: progress, loss, learning"
            " rate, throughput, where an RL update's time goes, DPO's implicit rewards.",
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
        .with_row(row("RL update phases"))
        .with_panel(
            timeseries(
                "Seconds per phase of an RL update (stacked)",
                "Where the latest PPOJob update's time went (rlhf_ppo_phase_seconds):"
                " generation, scoring, policy and reference log-probs, advantages, the"
                " policy/value update. The stack's top is the update's time"
                " (rlhf_ppo_update_seconds, at least the sum). Measured with the GPU"
                " synchronised at each phase's ends.",
                query(
                    f"avg by (rlhf_namespace, rlhf_job, phase) (rlhf_ppo_phase_seconds{{{JOBS}}})",
                    f"{{{{phase}}}} {JOB_LEGEND}",
                ),
                width=12,
            )
            .unit("s")
            .fill_opacity(60)
            .stacking(
                common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL).group("A")
            )
            .legend(table_legend("mean", "lastNotNull"))
        )
        .with_panel(
            timeseries(
                "Generation tokens per second",
                "Response tokens generated (all ranks) per second of the generation phase"
                " (rlhf_ppo_generation_tokens_per_second).",
                query(
                    "avg by (rlhf_namespace, rlhf_job)"
                    f" (rlhf_ppo_generation_tokens_per_second{{{JOBS}}})",
                    JOB_LEGEND,
                ),
                width=12,
            )
            .unit("none")
            .legend(table_legend("mean", "lastNotNull"))
        )
        .with_panel(
            timeseries(
                "Response length and truncated share",
                "Mean response length in tokens (rlhf_ppo_response_length_tokens) and the"
                " share of responses that hit responseLength without a stop token"
                " (rlhf_ppo_truncated_response_ratio, right axis).",
                query(
                    "avg by (rlhf_namespace, rlhf_job)"
                    f" (rlhf_ppo_response_length_tokens{{{JOBS}}})",
                    f"length {JOB_LEGEND}",
                ),
                query(
                    "avg by (rlhf_namespace, rlhf_job)"
                    f" (rlhf_ppo_truncated_response_ratio{{{JOBS}}})",
                    f"truncated {JOB_LEGEND}",
                ),
                width=8,
            )
            .legend(table_legend("lastNotNull"))
            .override_by_regexp(
                "/truncated/",
                [override("custom.axisPlacement", "right"), override("unit", "percentunit")],
            )
        )
        .with_panel(
            timeseries(
                "Groups with zero reward variance",
                "grpo and rloo: share of prompt groups whose answers all got the same score,"
                " so carry no learning signal (rlhf_ppo_zero_variance_group_ratio).",
                query(
                    "avg by (rlhf_namespace, rlhf_job)"
                    f" (rlhf_ppo_zero_variance_group_ratio{{{JOBS}}})",
                    JOB_LEGEND,
                ),
                width=8,
            )
            .unit("percentunit")
            .min(0)
            .max(1)
            .legend(table_legend("lastNotNull", "mean"))
        )
        .with_panel(
            timeseries(
                "GPU memory peak per phase",
                "Peak GPU memory PyTorch allocated in each phase of the latest update, main"
                " process (rlhf_ppo_phase_gpu_memory_peak_bytes; GPU runs only).",
                query(
                    "max by (rlhf_namespace, rlhf_job, phase)"
                    f" (rlhf_ppo_phase_gpu_memory_peak_bytes{{{JOBS}}})",
                    f"{{{{phase}}}} {JOB_LEGEND}",
                ),
                width=8,
            )
            .unit("bytes")
            .legend(table_legend("max", "lastNotNull"))
        )
        .with_row(row("DPO"))
        .with_panel(
            timeseries(
                "DPO implicit reward accuracy and margin",
                "Share of the logging window's training pairs whose implicit reward ranks the"
                " chosen answer first (rlhf_dpo_reward_accuracy) and the mean chosen-minus-"
                "rejected margin (rlhf_dpo_reward_margin, right axis).",
                query(
                    f"avg by (rlhf_namespace, rlhf_job) (rlhf_dpo_reward_accuracy{{{JOBS}}})",
                    f"accuracy {JOB_LEGEND}",
                ),
                query(
                    f"avg by (rlhf_namespace, rlhf_job) (rlhf_dpo_reward_margin{{{JOBS}}})",
                    f"margin {JOB_LEGEND}",
                ),
                width=12,
            )
            .legend(table_legend("lastNotNull", "max"))
            .override_by_regexp("/accuracy/", [override("unit", "percentunit")])
            .override_by_regexp("/margin/", [override("custom.axisPlacement", "right")])
        )
        .with_panel(
            timeseries(
                "DPO implicit rewards: chosen vs rejected",
                "Mean implicit reward (beta x log-ratio of policy to reference) of the chosen"
                " and of the rejected answers on training pairs (rlhf_train_metric).",
                query(
                    "avg by (rlhf_namespace, rlhf_job, metric) (rlhf_train_metric{"
                    f'{JOBS}, metric=~"rewards/chosen|rewards/rejected"}})',
                    f"{{{{metric}}}} {JOB_LEGEND}",
                ),
                width=12,
            ).legend(table_legend("lastNotNull"))
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
