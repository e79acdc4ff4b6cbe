"""The pipelines by name, for ``python -m pipelines <name> [args]`` from a checkout of the repository.

Each entry is a module of this package whose ``main(argv)`` parses ``argv`` (``None``: ``sys.argv[1:]``) and returns
the exit status. The modules are imported only when run, so that listing them imports no study.
"""

from __future__ import annotations

import importlib

__all__ = ["EXPERIMENTS", "PIPELINES", "run"]

# The studies that drive a bundle through many runs (pipelines/experiment.py).
EXPERIMENTS = ("kfold", "noise", "train_size", "architectures")

PIPELINES: dict[str, str] = {
    "demo": "the main job on the embedded synthetic data (make demo)",
    "kfold": "k-fold cross-validation of a segmentation bundle",
    "noise": "noise robustness: train and evaluate on clean and noisy images",
    "train_size": "learning curves: Dice against the number of training patients",
    "architectures": "the bundle's network variants on the same data and budget",
    "bench": "throughput of the bundles' trainers against the bare training loop (make bench)",
    "bench_layout": "channels first against channels last (make bench-layout)",
    "bench_synth": "wall time of the synthetic X-ray generator (make bench-synth)",
    "bench_xray": "X-ray segmentation bundles on a fixed synthetic set (make bench-xray)",
    "bench_mri": "MRI segmentation bundle on a fixed synthetic set (make bench-mri)",
    "bench_cls": "classification bundle, dual view against single views (make bench-cls)",
    "bench_measure": "measurements against the generator's exact geometry (make bench-measure)",
    "bench_analyze": "spine-monai analyze, patients per 10 s from packaged bundles (make bench-analyze)",
    "bench_real": "the bundles on public real images beside an smp baseline (make bench-real)",
    "baseline_smp": "a plain PyTorch loop with an smp U-Net, the baseline of bench_real",
    "config_counts": "how program-like the bundle configs are (expressions, custom references)",
    "recipe_fastcleverseg": "FastCleverSeg lumbar MRI (.mat) to the MRI bundle's case layout",
}


def run(name: str, argv: list[str] | None = None) -> int:
    """Run the pipeline ``name`` with ``argv``.

    Raises:
        KeyError: for a name that is not in :data:`PIPELINES`.
    """
    if name not in PIPELINES:
        raise KeyError(f"no pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
    return int(importlib.import_module(f"pipelines.{name}").main(argv) or 0)
