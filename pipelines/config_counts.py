"""How program-like the bundle configs are: the figures issue 26 compares with the MONAI model zoo.

For each bundle's ``train.json`` and ``evaluate.json``: the minified size in characters, the number of ``$``
expressions, and the number of references to ``spine_monai`` (``_target_`` names and expressions alike).

    python -m pipelines.config_counts [BUNDLES_DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def counts(path: Path) -> dict[str, int]:
    """Minified characters, ``$`` expressions and ``spine_monai`` references of one config file."""
    config = json.loads(path.read_text())
    strings = list(_strings(config))
    return {
        "chars": len(json.dumps(config, separators=(",", ":"))),
        "expressions": sum(s.startswith("$") for s in strings),
        "spine_monai_refs": sum(s.count("spine_monai") for s in strings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="?", type=Path, default=REPO / "bundles")
    args = parser.parse_args(argv)
    print(f"{'config':48s} {'chars':>6s} {'$ expr':>6s} {'spine_monai':>11s}")
    for path in sorted(args.bundles.glob("*/configs/*.json")):
        if path.name in ("train.json", "evaluate.json", "inference.json"):
            c = counts(path)
            name = f"{path.parent.parent.name}/{path.name}"
            print(f"{name:48s} {c['chars']:6d} {c['expressions']:6d} {c['spine_monai_refs']:11d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
