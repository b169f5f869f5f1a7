"""RLHF / Operator health: is the operator up, how fast and how reliably it reconciles."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from .common import query, rlhf_dashboard, row, stat, table_legend, thresholds, timeseries

# The operator's own scrape job, or the shared annotation-based pod job whose labelmap
# copies the pod's app.kubernetes.io/name label.
OPERATOR_UP = 'up{job=~".*rlhf-operator.*"} or up{app_kubernetes_io_name=~".*rlhf-operator.*"}'
RECONCILE_BUCKETS = "rate(rlhf_operator_reconcile_duration_seconds_bucket[5m])"


def dashboard() -> Dashboard:
    return (
        rlhf_dashboard(
            "rlhf-operator-health",
            "RLHF / Operator health",
            "The rlhf-operator itself: is it up, how fast and how reliably it reconciles jobs.",
        )
        .with_row(row("Operator"))
        .with_panel(
            stat(
                "Operator up",
                "Operator replicas whose /metrics scrape succeeds (up of the rlhf-operator"
                " scrape job). 0 means the operator is down.",
                query(f"sum({OPERATOR_UP})", "replicas up"),
                width=6,
                height=6,
            )
            .decimals(0)
            .thresholds(thresholds("red", (1, "green")))
        )
        .with_panel(
            timeseries(
                "Reconciles per second",
                "Reconciles of jobs per second, by kind (count of the latency histogram).",
                query(
                    "sum by (kind) (rate(rlhf_operator_reconcile_duration_seconds_count[5m]))",
                    "{{kind}}",
                ),
                width=9,
                height=6,
            ).unit("reqps")
        )
        .with_panel(
            timeseries(
                "Reconcile errors per second",
                "Reconciles that failed and will be retried (rlhf_operator_reconcile_errors_total);"
                " 0 when none failed.",
                query(
                    "sum by (kind) (rate(rlhf_operator_reconcile_errors_total[5m]))"
                    " or on() vector(0)",
                    "{{kind}}",
                ),
                width=9,
                height=6,
            ).unit("reqps")
        )
        .with_panel(
            timeseries(
                "Reconcile latency p50 / p90 / p99",
                "Time to reconcile one job (read the world, create children, write status), all"
                " kinds.",
                *(
                    query(
                        f"histogram_quantile({quantile}, sum by (le) ({RECONCILE_BUCKETS}))",
                        f"p{round(quantile * 100)}",
                    )
                    for quantile in (0.5, 0.9, 0.99)
                ),
                width=12,
            )
            .unit("s")
            .legend(table_legend("mean", "max"))
        )
        .with_panel(
            timeseries(
                "Reconcile latency p99 by kind",
                "99th percentile of reconcile latency per kind.",
                query(
                    f"histogram_quantile(0.99, sum by (le, kind) ({RECONCILE_BUCKETS}))",
                    "{{kind}}",
                ),
                width=12,
            )
            .unit("s")
            .legend(table_legend("mean", "max"))
        )
        .with_panel(
            timeseries(
                "Mean reconcile latency by kind",
                "Mean time per reconcile over 5 minutes.",
                query(
                    "sum by (kind) (rate(rlhf_operator_reconcile_duration_seconds_sum[5m]))"
                    " / sum by (kind) (rate(rlhf_operator_reconcile_duration_seconds_count[5m]))",
                    "{{kind}}",
                ),
                width=12,
            ).unit("s")
        )
        .with_panel(
            timeseries(
                "Operator scrape status",
                "up per operator replica (1: scraped, 0: scrape failed).",
                query(OPERATOR_UP, "{{instance}}"),
                width=12,
            )
            .min(0)
            .max(1)
            .decimals(0)
        )
    )
