"""Benchmark of the Normal/Damaged classification bundle on a fixed synthetic set: dual view against single views.

    python -m pipelines.bench_cls [--out bench_output/cls] [--cases 160] [--epochs 20] [--mask-dir DIR]

Generates ``--cases`` synthetic patients (seed 1234, 384x576, half Damaged), holds a quarter out as the testing
list, trains the bundle on the remaining folds with fold 0 validating, for each model:

- ``dual``: AP + LAT, one encoder per view (the bundle's default);
- ``ap_only`` and ``lat_only``: one view (the ablation);
- ``mask_guided``: AP + LAT with the vertebra masks as extra channels, read from ``--mask-dir`` (a predictions tree
  of the segmentation bundles for this data set, or ``<out>/data`` itself for its reference masks).

Each is evaluated on the testing list; the test accuracy and ROC AUC are printed with the training wall time and
written to ``results.json``. Runs already trained are reused; delete the output folder to start over.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

from pipelines.common import REPO, config_files, generated_once, run_bundle
from spine_monai.data import build_xray_datalist, write_datalist
from spine_monai.data.synth_xray import write_xray_dataset

BUNDLE = "spine_xray_cls"
SEED = 1234
MODELS = {
    "dual": {"views": ["AP", "LAT"]},
    "ap_only": {"views": ["AP"]},
    "lat_only": {"views": ["LAT"]},
}


def _data(out: Path, cases: int) -> tuple[Path, Path]:
    """The synthetic set and its datalist, generated once; a different ``--cases`` needs another ``--out``."""
    data = generated_once(
        out / "data", {"cases": cases, "seed": SEED}, lambda root: write_xray_dataset(root, cases, seed=SEED)
    )
    datalist = out / "datalist.json"
    if not datalist.exists():
        write_datalist(datalist, build_xray_datalist(data, folds=5, test_fraction=0.25, seed=SEED))
    return data, datalist


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "cls")
    parser.add_argument("--cases", type=int, default=160, help="synthetic patients (default 160)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--mask-dir", type=Path, default=None, help="masks for the mask-guided model (ELL888 layout)")
    parser.add_argument("--backbone", default=None, help="encoder override, e.g. densenet121 (default: the bundle's)")
    parser.add_argument("--spatial-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--models", nargs="+", default=None, help="subset of: dual ap_only lat_only mask_guided")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    data, datalist = _data(out, args.cases)
    dl = json.loads(datalist.read_text())
    n_train = sum(r["fold"] != 0 for r in dl["training"])
    models = dict(MODELS)
    if args.mask_dir is not None:
        models["mask_guided"] = {"views": ["AP", "LAT"], "mask_guided": True, "mask_dir": args.mask_dir.resolve()}
    if args.models:
        unknown = sorted(set(args.models) - set(models))
        if unknown:
            raise SystemExit(f"unknown or unavailable models {unknown} (mask_guided needs --mask-dir)")
        models = {k: v for k, v in models.items() if k in args.models}
    model_overrides = {}
    if args.backbone:
        model_overrides["backbone"] = args.backbone
    if args.spatial_size:
        model_overrides["spatial_size"] = list(args.spatial_size)
    if args.learning_rate:
        model_overrides["learning_rate"] = args.learning_rate
    results = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "cases": args.cases,
        "train_patients": n_train,
        "validation_patients": len(dl["training"]) - n_train,
        "test_patients": len(dl["testing"]),
        "epochs": args.epochs,
        "overrides": {k: str(v) for k, v in model_overrides.items()},
        "models": {},
    }
    for name, overrides in models.items():
        run_dir = out / name
        common = {"dataset_dir": data, "datalist": datalist, "output_dir": run_dir, **overrides, **model_overrides}
        train_s = None
        if not (run_dir / "models" / "model.pt").exists():
            train = {**common, "train#trainer#max_epochs": args.epochs, "progress_bar": False}
            if args.batch_size:
                train["batch_size"] = args.batch_size
            train_s = run_bundle(config_files(BUNDLE, "train.json"), train, log=run_dir / "train.log")
        eval_start = time.perf_counter()
        run_bundle(config_files(BUNDLE, "evaluate.json"), common, log=run_dir / "evaluate.log")
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
        results["models"][name] = {
            "views": overrides["views"],
            "mask_guided": bool(overrides.get("mask_guided", False)),
            "train_seconds": train_s,
            "evaluate_seconds": round(time.perf_counter() - eval_start, 1),
            "test_accuracy": metrics["accuracy"],
            "test_roc_auc": metrics["roc_auc"],
            "test_sensitivity": metrics["sensitivity"],
            "test_specificity": metrics["specificity"],
            "n": metrics["n"],
        }
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(
        f"\nNormal/Damaged classification, {n_train} train / {results['validation_patients']} validation / "
        f"{len(dl['testing'])} test patients, {args.epochs} epochs:"
    )
    print(f"{'model':<12} {'views':<8} {'accuracy':>8} {'ROC AUC':>8} {'train min':>9}")
    for name, r in results["models"].items():
        acc = "n/a" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}"
        auc = "n/a" if r["test_roc_auc"] is None else f"{r['test_roc_auc']:.3f}"
        train_min = "reused" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f}"
        print(f"{name:<12} {'+'.join(r['views']):<8} {acc:>8} {auc:>8} {train_min:>9}")
    print(f"\nwritten: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
