"""What the pipelines share: paths of the bundles and running a bundle through ``python -m monai.bundle``."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from spine_monai.workflow import run_config_files

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"

__all__ = ["REPO", "BUNDLES", "bundle_command", "run_bundle", "config_files", "generated_once"]


def config_files(bundle: str, *names: str) -> list[str]:
    """Paths of a bundle's config files in this repository, each overlay after the configs it is merged on:
    ``config_files("spine_xray_ap_seg", "evaluate.json")`` gives train.json and evaluate.json."""
    return run_config_files(BUNDLES / bundle / "configs", *names)


def _format(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return repr(list(value))
    return str(value)


def bundle_command(configs: Sequence[str], overrides: Mapping[str, object]) -> list[str]:
    """The ``python -m monai.bundle run`` command line for ``configs`` with ``overrides``."""
    config = configs[0] if len(configs) == 1 else repr(list(configs))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config]
    for key, value in overrides.items():
        cmd += [f"--{key}", _format(value)]
    return cmd


def run_bundle(configs: Sequence[str], overrides: Mapping[str, object], log: Path | None = None) -> float:
    """Run a bundle in a child process, as a user would, and return the wall time in seconds.

    The command is printed first so it can be copied. Output goes to the terminal, or to ``log`` if given.

    Raises:
        subprocess.CalledProcessError: when the bundle fails; the log (if any) holds the traceback.
    """
    cmd = bundle_command(configs, overrides)
    printable = " ".join(shlex.quote(c) for c in ["python", *cmd[1:]])
    print(f"\n$ {printable}", flush=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    if log is None:
        subprocess.run(cmd, check=True, cwd=REPO, env=env)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            try:
                subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
            except subprocess.CalledProcessError:
                print(f"failed; see {log}", file=sys.stderr)
                raise
    return time.perf_counter() - start


def generated_once(root: Path, settings: Mapping[str, object], generate: Callable[[Path], None]) -> Path:
    """A benchmark's synthetic set: made by ``generate(root)`` on first use, reused afterwards.

    ``settings`` (what the set is made with: size, seed) are written to ``<root>.json`` once ``generate`` has
    finished. A set made with other settings, or without a record (an older or interrupted run), is refused
    rather than measured in place of the one asked for.

    Returns:
        ``root``.
    """
    stamp = root.with_suffix(".json")
    wanted = dict(settings)
    if root.exists():
        found = json.loads(stamp.read_text()) if stamp.exists() else "no record of its settings"
        if found != wanted:
            raise SystemExit(f"{root} holds a set made with {found}, not {wanted}; delete it or use another --out")
        return root
    generate(root)
    stamp.write_text(json.dumps(wanted) + "\n")
    return root
