"""Write the cloudpacs Grafana dashboards as JSON (run through infra/dashboards/generate.sh).

    python generate.py --out charts/cloudpacs/dashboards          write every dashboard
    python generate.py --out charts/cloudpacs/dashboards --check  fail if a file is stale

The JSON is what Grafana's dashboard model expects (schemaVersion from the SDK), with sorted
keys so that regenerating gives byte-identical files and diffs stay readable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from boards import DASHBOARDS
from grafana_foundation_sdk.cog.encoder import JSONEncoder


def render(name: str) -> str:
    """The JSON text of one dashboard."""
    model = json.loads(json.dumps(DASHBOARDS[name](), cls=JSONEncoder))
    # Unique panel ids (rows included): Grafana keys panel links and edits on them.
    for panel_id, panel in enumerate(model["panels"], start=1):
        panel["id"] = panel_id
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory of the .json files")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()

    stale = []
    expected = {f"{name}.json" for name in DASHBOARDS}
    for name in DASHBOARDS:
        path = args.out / f"{name}.json"
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in expected)
    if args.check and (stale or extra):
        print(
            f"dashboards out of date (stale: {stale}, unexpected: {extra}): "
            "run infra/dashboards/generate.sh",
            file=sys.stderr,
        )
        return 1
    for name in extra:
        (args.out / name).unlink()
        print(f"removed {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
