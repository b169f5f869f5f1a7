"""Compare two folders of Grafana dashboard JSON semantically, e.g. before and after a change
to the dashboard code:

    git show HEAD~1:helm/rlhf-operator/dashboards/training.json > /tmp/old/training.json ...
    python hack/compare-dashboards.py /tmp/old helm/rlhf-operator/dashboards

Panels are matched by title (rows by "row:" + title), targets by refId, variables by name,
so reordering alone is no difference. Prints, per file, the uid / title / panels / queries
of both sides, every value the old side has that the new one lacks or changes ("-" / "~"),
and every field only the new side has ("+"). Exit code 1 if anything was lost or changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def keyed(board: dict[str, Any]) -> dict[str, Any]:
    """The dashboard with lists of named things turned into dicts keyed by their names."""
    board = json.loads(json.dumps(board))
    board["panels"] = {
        ("row:" if panel["type"] == "row" else "") + panel["title"]: _panel(panel)
        for panel in board.get("panels", [])
    }
    templating = board.get("templating", {})
    templating["list"] = {variable["name"]: variable for variable in templating.get("list", [])}
    return board


def _panel(panel: dict[str, Any]) -> dict[str, Any]:
    panel["targets"] = {target["refId"]: target for target in panel.get("targets", [])}
    return panel


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        found: dict[str, Any] = {}
        for key, item in value.items():
            found.update(leaves(item, f"{path}/{key}"))
        return found
    return {path: value}


def summary(board: dict[str, Any]) -> list[str]:
    lines = [f"uid={board.get('uid')} title={board.get('title')!r}"]
    for panel in board.get("panels", []):
        lines.append(f"  [{panel.get('id')}] {panel['type']} {panel['title']!r}")
        for target in panel.get("targets", []):
            lines.append(f"      {target['refId']}: {target['expr']}")
    return lines


def compare(old_dir: Path, new_dir: Path) -> int:
    lost = 0
    names = sorted(
        {p.name for p in old_dir.glob("*.json")} | {p.name for p in new_dir.glob("*.json")}
    )
    for name in names:
        print(f"===== {name}")
        if not (old_dir / name).exists() or not (new_dir / name).exists():
            print("  only in", old_dir if (old_dir / name).exists() else new_dir)
            lost += 1
            continue
        old_board = json.loads((old_dir / name).read_text())
        new_board = json.loads((new_dir / name).read_text())
        old_lines, new_lines = summary(old_board), summary(new_board)
        if old_lines == new_lines:
            print("  same uid, title, panels (id, type, title) and queries:")
            print("\n".join("  " + line for line in old_lines))
        else:
            print("  OLD:\n" + "\n".join("  " + line for line in old_lines))
            print("  NEW:\n" + "\n".join("  " + line for line in new_lines))
            lost += 1
        old, new = leaves(keyed(old_board)), leaves(keyed(new_board))
        for path in sorted(old):
            if path not in new:
                print(f"  - {path} = {old[path]!r}")
                lost += 1
            elif old[path] != new[path]:
                print(f"  ~ {path}: {old[path]!r} -> {new[path]!r}")
                lost += 1
        added = sorted(path for path in new if path not in old)
        for path in added:
            print(f"  + {path} = {new[path]!r}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
