"""RLHF / Evaluation: held-out figures of each stage, PPO's and DPO's reward and win rate
against the reference, DPO's held-out implicit-reward accuracy and margins, and PPO's
training reward, KL and losses."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel as TimeseriesPanel

from .common import (
    JOB_LEGEND,
    JOBS,
    override,
    query,
    rlhf_dashboard,
    row,
    table_legend,
    timeseries,
)


def dashboard() -> Dashboard:
    return (
        rlhf_dashboard(
            "rlhf-evaluation",
            "RLHF / Evaluation",
            "Held-out evaluation of each stage: SFT loss/accuracy, reward-model accuracy, PPO"
            " and DPO reward against the reference policy, win rate, KL, DPO implicit-reward"
            " accuracy and margins.",
        )
        .with_row(row("Supervised fine-tuning"))
        .with_panel(
            evaluation_panel(
                "SFT evaluation: loss, accuracy, F1",
                "Evaluation figures of SFTJobs (rlhf_eval_metric): loss for causal LMs and"
                " classifiers; accuracy and macro F1 for classifiers.",
                'avg by (rlhf_namespace, rlhf_job, metric) (rlhf_eval_metric{kind="SFTJob",'
                f' {JOBS}, metric=~"loss|accuracy|f1_macro"}})',
                f"{{{{metric}}}} {JOB_LEGEND}",
                width=24,
            ).override_by_regexp("/loss/", [override("custom.axisPlacement", "right")])
        )
        .with_row(row("Reward model"))
        .with_panel(
            evaluation_panel(
                "Reward model accuracy",
                "Fraction of held-out preference pairs the reward model ranks correctly.",
                'avg by (rlhf_namespace, rlhf_job) (rlhf_eval_metric{kind="RewardModelJob",'
                f' {JOBS}, metric="accuracy"}})',
                JOB_LEGEND,
                width=12,
            )
            .unit("percentunit")
            .min(0)
            .max(1)
        )
        .with_panel(
            evaluation_panel(
                "Reward model mean margin",
                "Mean score of the chosen minus the rejected response on held-out pairs.",
                'avg by (rlhf_namespace, rlhf_job) (rlhf_eval_metric{kind="RewardModelJob",'
                f' {JOBS}, metric="mean_margin"}})',
                JOB_LEGEND,
                width=12,
            )
        )
        .with_row(row("PPO and DPO"))
        .with_panel(
            evaluation_panel(
                "PPO / DPO evaluation reward: policy vs reference",
                "Mean reward-model score of the trained policy's and the reference policy's"
                " responses to held-out prompts (a DPOJob's when it names a judging"
                " RewardModelJob).",
                "avg by (rlhf_namespace, rlhf_job, metric)"
                ' (rlhf_eval_metric{kind=~"PPOJob|DPOJob",'
                f' {JOBS}, metric=~"reward_policy|reward_reference"}})',
                f"{{{{metric}}}} {JOB_LEGEND}",
                width=8,
            )
        )
        .with_panel(
            evaluation_panel(
                "PPO / DPO win rate vs reference",
                "Fraction of held-out prompts where the policy's response outscores the"
                " reference's (ties count half), judged by the reward model.",
                'avg by (rlhf_namespace, rlhf_job) (rlhf_eval_metric{kind=~"PPOJob|DPOJob",'
                f' {JOBS}, metric="win_rate"}})',
                JOB_LEGEND,
                width=8,
            )
            .unit("percentunit")
            .min(0)
            .max(1)
        )
        .with_panel(
            evaluation_panel(
                "PPO evaluation KL",
                "Mean summed per-token KL(policy || reference) on held-out prompts.",
                'avg by (rlhf_namespace, rlhf_job) (rlhf_eval_metric{kind="PPOJob",'
                f' {JOBS}, metric="kl"}})',
                JOB_LEGEND,
                width=8,
            )
        )
        .with_panel(
            evaluation_panel(
                "DPO held-out implicit-reward accuracy",
                "Share of held-out preference pairs whose implicit DPO reward ranks the"
                " chosen answer first (eval rewards/accuracies).",
                'avg by (rlhf_namespace, rlhf_job) (rlhf_eval_metric{kind="DPOJob",'
                f' {JOBS}, metric="rewards/accuracies"}})',
                JOB_LEGEND,
                width=8,
            )
            .unit("percentunit")
            .min(0)
            .max(1)
        )
        .with_panel(
            evaluation_panel(
                "DPO held-out implicit-reward margin",
                "Mean implicit reward of the chosen minus the rejected answer on held-out"
                " pairs (eval rewards/margins).",
                'avg by (rlhf_namespace, rlhf_job) (rlhf_eval_metric{kind="DPOJob",'
                f' {JOBS}, metric="rewards/margins"}})',
                JOB_LEGEND,
                width=8,
            )
        )
        .with_panel(
            evaluation_panel(
                "DPO held-out implicit rewards: chosen vs rejected",
                "Mean implicit reward (beta x log-ratio of policy to reference) of the chosen"
                " and of the rejected answers on held-out pairs.",
                "avg by (rlhf_namespace, rlhf_job, metric) (rlhf_eval_metric{"
                f'kind="DPOJob", {JOBS}, metric=~"rewards/chosen|rewards/rejected"}})',
                f"{{{{metric}}}} {JOB_LEGEND}",
                width=8,
            )
        )
        .with_panel(
            timeseries(
                "PPO score during training",
                "Mean reward-model score of the rollouts (rlhf_ppo_score) and the same minus the"
                " KL penalty (rlhf_ppo_rlhf_reward).",
                ppo_query("rlhf_ppo_score", f"score {JOB_LEGEND}"),
                ppo_query("rlhf_ppo_rlhf_reward", f"score - KL penalty {JOB_LEGEND}"),
                width=12,
            ).legend(table_legend("lastNotNull", "max"))
        )
        .with_panel(
            timeseries(
                "PPO KL during training",
                "Mean KL divergence of the policy from the reference on the rollouts.",
                ppo_query("rlhf_ppo_kl", JOB_LEGEND),
                width=12,
            ).legend(table_legend("lastNotNull", "max"))
        )
        .with_panel(
            timeseries(
                "PPO entropy and clip fraction",
                "Policy entropy per sequence and the fraction of probability ratios clipped.",
                ppo_query("rlhf_ppo_entropy", f"entropy {JOB_LEGEND}"),
                ppo_query("rlhf_ppo_clip_fraction", f"clip fraction {JOB_LEGEND}"),
                width=12,
            )
            .legend(table_legend("lastNotNull"))
            .override_by_regexp(
                "/clip fraction/",
                [override("custom.axisPlacement", "right"), override("unit", "percentunit")],
            )
        )
        .with_panel(
            timeseries(
                "PPO losses",
                "Clipped policy-gradient loss and value-function loss.",
                ppo_query("rlhf_ppo_policy_loss", f"policy {JOB_LEGEND}"),
                ppo_query("rlhf_ppo_value_loss", f"value {JOB_LEGEND}"),
                width=12,
            ).legend(table_legend("lastNotNull"))
        )
    )


def evaluation_panel(
    title: str, description: str, expr: str, legend: str, *, width: int
) -> TimeseriesPanel:
    """One held-out figure (rlhf_eval_metric) per job, with its last value."""
    return timeseries(title, description, query(expr, legend), width=width).legend(
        table_legend("lastNotNull")
    )


def ppo_query(gauge: str, legend: str) -> Dataquery:
    """The mean of one of the PPO trainer's gauges per job."""
    return query(f"avg by (rlhf_namespace, rlhf_job) ({gauge}{{{JOBS}}})", legend)
