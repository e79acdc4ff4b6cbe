"""``python -m pipelines <name> [args]``: run a study, benchmark or dataset recipe of this checkout."""

from __future__ import annotations

import sys

from pipelines.registry import PIPELINES, run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in PIPELINES:
        width = max(map(len, PIPELINES))
        lines = [f"  {name:{width}s}  {what}" for name, what in PIPELINES.items()]
        usage = "usage: python -m pipelines <name> [args]; `<name> --help` lists its options\n\n" + "\n".join(lines)
        known = bool(argv) and argv[0] in ("-h", "--help")
        if argv and not known:
            print(f"error: no pipeline {argv[0]!r}\n", file=sys.stderr)
        print(usage, file=sys.stdout if known else sys.stderr)
        return 0 if known else 2
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
