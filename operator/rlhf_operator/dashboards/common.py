"""What every RLHF dashboard shares: variables, links, panel defaults, queries, layout.

Built with the Grafana Foundation SDK's builders. Each function returns an SDK builder with
our defaults set, so a dashboard module chains only what makes its panel different (unit,
thresholds, legend calculations, overrides).
"""

from __future__ import annotations

import json
import string
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import bargauge as bargauge_builders
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
GRAFANA = dashboard_models.DataSourceRef(type_val="grafana", uid="-- Grafana --")

# Trainer series are told apart by the trainer's own labels, never the scrape target's
# namespace / job (those say which pod and scrape job, not which training job).
JOBS = 'rlhf_namespace=~"$namespace", rlhf_job=~"$job"'
JOB_LEGEND = "{{rlhf_namespace}}/{{rlhf_job}}"

# The query every job variable reads: a series each trainer exports from its first step.
VARIABLE_SERIES = "rlhf_training_step"

Panel = TypeVar("Panel", timeseries_builders.Panel, stat_builders.Panel, bargauge_builders.Panel)


def rlhf_dashboard(uid: str, title: str, description: str) -> dashboard_builders.Dashboard:
    """A dashboard with the common settings, the datasource / namespace / job variables,
    Grafana's built-in annotations and a link menu to the other RLHF dashboards."""
    return (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["rlhf", "rlhf-operator"])
        .editable()
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .timezone("")
        .week_start("")
        .fiscal_year_start_month(0)
        .refresh("30s")
        .version(1)
        .annotation(
            dashboard_builders.AnnotationQuery()
            .built_in(1)
            .datasource(GRAFANA)
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .name("Annotations & Alerts")
            .type("dashboard")
        )
        .link(
            dashboard_builders.DashboardLink("RLHF dashboards")
            .type(dashboard_models.DashboardLinkType.DASHBOARDS)
            .tags(["rlhf"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
            .icon("external link")
            .target_blank(False)
            .tooltip("")
            .url("")
        )
        .with_variable(
            dashboard_builders.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .hide(dashboard_models.VariableHide.DONT_HIDE)
            .regex("")
        )
        .with_variable(
            job_variable(
                "namespace", "Namespace", f"label_values({VARIABLE_SERIES}, rlhf_namespace)"
            )
        )
        .with_variable(
            job_variable(
                "job",
                "Job",
                f'label_values({VARIABLE_SERIES}{{rlhf_namespace=~"$namespace"}}, rlhf_job)',
            )
        )
    )


def job_variable(name: str, label: str, definition: str) -> dashboard_builders.QueryVariable:
    """A multi-select variable of the trainers' label values; "All" matches with .*"""
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(
            {
                "qryType": 1,
                "query": definition,
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            }
        )
        .current(dashboard_models.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .hide(dashboard_models.VariableHide.DONT_HIDE)
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .options([])
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .regex("")
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
    )


def query(expr: str, legend: str) -> prometheus_builders.Dataquery:
    """A PromQL range query in code mode (the panel helpers give it its refId)."""
    return (
        prometheus_builders.Dataquery()
        .datasource(DATASOURCE)
        .expr(expr)
        .legend_format(legend)
        .range()
        .editor_mode(prometheus_models.QueryEditorMode.CODE)
    )


def _with_queries(panel: Panel, queries: tuple[prometheus_builders.Dataquery, ...]) -> Panel:
    for ref_id, target in zip(string.ascii_uppercase, queries, strict=False):
        panel.with_target(target.ref_id(ref_id))
    return panel


def timeseries(
    title: str,
    description: str,
    *queries: prometheus_builders.Dataquery,
    width: int,
    height: int = 8,
) -> timeseries_builders.Panel:
    """Lines, 10% fill, no points, gaps spanned; list legend; tooltip of all series."""
    panel = (
        timeseries_builders.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .draw_style(common_models.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common_models.VisibilityMode.NEVER)
        .span_nulls(True)
        .stacking(common_builders.StackingConfig().mode(common_models.StackingMode.NONE).group("A"))
        .legend(list_legend())
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )
    return _with_queries(panel, queries)


def list_legend() -> common_builders.VizLegendOptions:
    return _legend(common_models.LegendDisplayMode.LIST, ())


def table_legend(*calculations: str) -> common_builders.VizLegendOptions:
    """A table legend with these reductions per series (e.g. lastNotNull, max, mean)."""
    return _legend(common_models.LegendDisplayMode.TABLE, calculations)


def _legend(
    mode: common_models.LegendDisplayMode, calculations: tuple[str, ...]
) -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(mode)
        .placement(common_models.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(list(calculations))
    )


def last_value() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def stat(
    title: str,
    description: str,
    *queries: prometheus_builders.Dataquery,
    width: int,
    height: int,
) -> stat_builders.Panel:
    """The last value, coloured by the thresholds, over an area sparkline."""
    panel = (
        stat_builders.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .reduce_options(last_value())
        .color_mode(common_models.BigValueColorMode.VALUE)
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .justify_mode(common_models.BigValueJustifyMode.AUTO)
        .orientation(common_models.VizOrientation.AUTO)
        .text_mode(common_models.BigValueTextMode.AUTO)
    )
    return _with_queries(panel, queries)


def bargauge(
    title: str,
    description: str,
    *queries: prometheus_builders.Dataquery,
    width: int,
    height: int = 8,
) -> bargauge_builders.Panel:
    """One horizontal gradient bar per series, its last value."""
    panel = (
        bargauge_builders.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .reduce_options(last_value())
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .show_unfilled(True)
        .value_mode(common_models.BarGaugeValueMode.COLOR)
        .name_placement(common_models.BarGaugeNamePlacement.AUTO)
        .sizing(common_models.BarGaugeSizing.AUTO)
        .min_viz_height(16)
        .min_viz_width(8)
        .max_viz_height(300)
    )
    return _with_queries(panel, queries)


def thresholds(base_color: str, *steps: tuple[float, str]) -> dashboard_builders.ThresholdsConfig:
    """Absolute thresholds: ``base_color`` below the first step, then (value, color) steps."""
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps(
            [dashboard_models.Threshold(value=None, color=base_color)]
            + [dashboard_models.Threshold(value=value, color=color) for value, color in steps]
        )
    )


def override(property_id: str, value: Any) -> dashboard_models.DynamicConfigValue:
    """One field property an override sets, e.g. ("custom.axisPlacement", "right")."""
    return dashboard_models.DynamicConfigValue(id_val=property_id, value=value)


def row(title: str) -> dashboard_builders.Row:
    return dashboard_builders.Row(title).collapsed(False)


def to_json(board: dashboard_builders.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, panels numbered 1, 2, ... in layout order.

    Two fields the SDK's models lack are added: ``id: null`` (provisioned dashboards carry
    no instance id) and each query variable's ``definition`` (the query as Grafana's
    variable list shows it, which the tests read)."""
    model = board.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    document: dict[str, Any] = {"id": None, **json.loads(json.dumps(model, cls=JSONEncoder))}
    for variable in document.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            variable["definition"] = variable["query"]["query"]
    return document
