"""The generated Grafana dashboards: in sync with the code, laid out on Grafana's grid.

What each panel queries is checked in test_chart_static.py (series exported, variables
matched with =~, valid PromQL, data from a real Prometheus)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rlhf_operator.cli import main
from rlhf_operator.dashboards import dashboard_documents, stale_dashboards

ROOT = Path(__file__).resolve().parents[2]
CHART_DASHBOARDS = ROOT / "helm" / "rlhf-operator" / "dashboards"


def test_checked_in_dashboards_match_the_code() -> None:
    stale = stale_dashboards(CHART_DASHBOARDS)
    assert not stale, f"run `make dashboards`: {stale} drifted from rlhf_operator/dashboards"


def test_check_command_reports_drift(tmp_path: Path) -> None:
    assert main(["dashboards", "--output", str(tmp_path)]) == 0
    assert main(["dashboards", "--check", "--output", str(tmp_path)]) == 0
    training = tmp_path / "training.json"
    training.write_text(training.read_text().replace("rate(", "irate(", 1))
    assert main(["dashboards", "--check", "--output", str(tmp_path)]) == 1


def test_check_command_reports_a_dashboard_the_code_no_longer_makes(tmp_path: Path) -> None:
    assert main(["dashboards", "--output", str(tmp_path)]) == 0
    (tmp_path / "removed.json").write_text("{}")
    assert main(["dashboards", "--check", "--output", str(tmp_path)]) == 1


def test_generation_is_deterministic() -> None:
    assert json.dumps(dashboard_documents()) == json.dumps(dashboard_documents())


def test_panels_fit_the_grid_without_overlapping() -> None:
    for name, board in dashboard_documents().items():
        taken: dict[tuple[int, int], str] = {}
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (name, panel["title"])
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in taken, f"{name}: {panel['title']!r} over {taken[x, y]!r}"
                    taken[x, y] = panel["title"]


def test_panels_are_numbered_in_order_and_provisioned_without_an_instance_id() -> None:
    for board in dashboard_documents().values():
        assert board["id"] is None
        assert [panel["id"] for panel in board["panels"]] == list(
            range(1, len(board["panels"]) + 1)
        )
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["definition"] == variable["query"]["query"]


def test_without_the_sdk_the_command_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The operator image has no SDK: the command explains instead of a traceback."""
    for name in list(sys.modules):
        if name.startswith(("grafana_foundation_sdk", "rlhf_operator.dashboards")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "grafana_foundation_sdk", None)
    assert main(["dashboards", "--output", str(tmp_path)]) == 2
    assert "pip install 'rlhf-operator[dashboards]'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
