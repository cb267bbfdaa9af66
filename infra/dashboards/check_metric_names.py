"""Check that dashboards and alert rules query only metrics that pacs_common.metrics defines,
and that every metric defined there appears on some dashboard.

Run with the project environment (``uv run python infra/dashboards/check_metric_names.py``):
it imports ``pacs_common.metrics`` itself, so a renamed metric breaks this check, not a
dashboard in production.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pacs_common import metrics
from prometheus_client.metrics import MetricWrapperBase

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "charts/cloudpacs/dashboards").glob("*.json"))
RULES = REPO / "infra/prometheus/rules.yml"
NAME = re.compile(r"\bpacs_(?!common\b)[a-z0-9_]+\b")  # pacs_common is the package
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def defined() -> dict[str, str]:
    """Exposed sample name -> metric family, for every metric object in pacs_common.metrics."""
    names: dict[str, str] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            family = value._name  # prometheus_client keeps the name here
            for suffix in SUFFIXES[value._type]:
                names[family + suffix] = family
    return names


def main() -> int:
    known = defined()
    problems: list[str] = []
    used_families: set[str] = set()
    for path in [*DASHBOARDS, RULES]:
        for name in sorted(set(NAME.findall(path.read_text()))):
            if name in known:
                used_families.add(known[name])
            else:
                problems.append(f"{path.relative_to(REPO)}: {name} is not defined in metrics.py")
    for family in sorted(set(known.values()) - used_families):
        problems.append(f"{family} (metrics.py) appears on no dashboard or alert")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not DASHBOARDS:
        problems.append("no dashboards found: run infra/dashboards/generate.sh")
    print(f"{len(known)} sample names, {len(used_families)} families, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
