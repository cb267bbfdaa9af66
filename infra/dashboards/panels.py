"""Small builders shared by the cloudpacs dashboards (grafana-foundation-sdk).

Every dashboard gets the same two variables, a Prometheus data source and a namespace (one
cloudpacs release per namespace); every query filters on ``namespace=~"$namespace"``, and the
"All" value ``.*`` also matches series without a namespace label (a Prometheus outside
Kubernetes).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
NS = 'namespace=~"$namespace"'
"""Label matcher every query carries."""


def new_dashboard(uid: str, title: str, description: str) -> dash.Dashboard:
    """A dashboard with the shared variables, time range and refresh."""
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["cloudpacs"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(
            dash.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .current(VariableOption(selected=True, text="Prometheus", value="prometheus"))
        )
        .with_variable(
            dash.QueryVariable("namespace")
            .label("Namespace")
            .datasource(DATASOURCE)
            .query("label_values(pacs_grpc_server_requests_total, namespace)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .include_all(True)
            .all_value(".*")
            .current(VariableOption(selected=True, text="All", value="$__all"))
        )
    )


def query(expr: str, legend: str = "", ref_id: str = "A") -> prometheus.Dataquery:
    """A range query on the dashboard's data source."""
    target = prometheus.Dataquery().expr(expr).range().ref_id(ref_id).datasource(DATASOURCE)
    return target.legend_format(legend) if legend else target


def graph(
    title: str,
    description: str,
    unit: str,
    *queries: prometheus.Dataquery,
    width: int = 12,
    stacked: bool = False,
) -> timeseries.Panel:
    """A time series panel; several queries get consecutive reference ids."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(width)
        .fill_opacity(10)
        .line_width(1)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    if stacked:
        panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
    for index, target in enumerate(queries):
        panel = panel.with_target(target.ref_id(chr(ord("A") + index)))
    return panel


def single(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    thresholds: list[tuple[float | None, str]] | None = None,
    width: int = 4,
) -> stat.Panel:
    """A stat panel showing the last value of one query, coloured by thresholds."""
    steps = thresholds or [(None, "green")]
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(4)
        .span(width)
        .with_target(query(expr).instant())
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .thresholds(
            dash.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=value, color=color) for value, color in steps])
        )
    )


def row(title: str) -> dash.Row:
    """A collapsible section."""
    return dash.Row(title)
