"""Benchmark of the Normal/Damaged classification bundle on a fixed synthetic set: dual view against single views.

    python -m pipelines.bench_cls [--out bench_output/cls] [--cases 160] [--epochs 20]
        [--mask-dir DIR | --predict-masks [--seg-models AP.pt LAT.pt]] [--mask-structures ...] [--models ...]

``make bench-cls`` runs the vertebra-level models on 480 patients, with masks the ``make bench-xray`` models
predict (``--predict-masks``).

Generates ``--cases`` synthetic patients (seed 1234, 384x576, half Damaged), holds a quarter out as the testing
list, trains the bundle on the remaining folds with fold 0 validating, for each model:

- ``dual``: AP + LAT, one encoder per view (the bundle's default);
- ``ap_only`` and ``lat_only``: one view (the ablation);
- ``mask_guided``: AP + LAT with the vertebra masks as extra channels, read from ``--mask-dir`` (a predictions tree
  of the segmentation bundles for this data set, or ``<out>/data`` itself for its reference masks);
- ``vertebra``, ``vertebra_ap`` and ``vertebra_lat``: the vertebra-level classifier (one patch per vertebral body,
  cut around the bodies of the ``--mask-dir`` vertebra masks) on both views and on each alone.

Every model is listed in ``results.json`` with its own date, epochs and settings; one call adds to the table.

Each is evaluated on the testing list; the test accuracy and ROC AUC are printed with the training wall time and
written to ``results.json``. Runs already trained are reused (and so are predicted masks made with the same
checkpoints); delete the output folder to start over.
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
from spine_monai.synthetic.xray import write_xray_dataset

BUNDLE = "spine_xray_cls"
SEG_BUNDLES = {"AP": "spine_xray_ap_seg", "LAT": "spine_xray_lat_seg"}
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


def _predicted_masks(out: Path, data: Path, checkpoints: dict[str, Path]) -> Path:
    """The segmentation bundles' predictions for the set (``<out>/masks/predictions``), made once.

    Raises:
        SystemExit: when a segmentation checkpoint is missing.
    """
    missing = [str(p) for p in checkpoints.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"no segmentation model {missing}: run `make bench-xray` first, or pass --seg-models AP LAT")
    masks = out / "masks"
    done = masks / "done.json"
    record = {view: str(path) for view, path in checkpoints.items()}
    if done.exists() and json.loads(done.read_text()) == record:
        return masks / "predictions"
    for view, ckpt in checkpoints.items():
        overrides = {"dataset_dir": data, "output_dir": masks, "ckpt_path": ckpt}
        run_bundle(config_files(SEG_BUNDLES[view], "inference.json"), overrides, log=masks / f"{view}.log")
    masks.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record) + "\n")
    return masks / "predictions"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "cls")
    parser.add_argument("--cases", type=int, default=160, help="synthetic patients (default 160)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--mask-dir",
        type=Path,
        default=None,
        help="masks for the mask-guided and vertebra-level models (ELL888 layout)",
    )
    parser.add_argument(
        "--predict-masks",
        action="store_true",
        help="make --mask-dir with the segmentation bundles' inference (the --seg-models checkpoints) on the set",
    )
    parser.add_argument(
        "--seg-models",
        type=Path,
        nargs=2,
        metavar=("AP", "LAT"),
        default=[
            REPO / "bench_output" / "xray" / "ap_e30" / "models" / "model.pt",
            REPO / "bench_output" / "xray" / "lat_e50" / "models" / "model.pt",
        ],
        help="segmentation checkpoints for --predict-masks (default: the `make bench-xray` models)",
    )
    parser.add_argument("--backbone", default=None, help="encoder override, e.g. densenet121 (default: the bundle's)")
    parser.add_argument("--spatial-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument(
        "--mask-structures",
        nargs="+",
        default=None,
        help="mask channels of the mask-guided and vertebra-level models (default: the bundle's vertebra masks)",
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument(
        "--channels-last",
        choices=["true", "false"],
        default=None,
        help="the bundle's channels_last (default: the bundle's, true on a CPU)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="subset of: dual ap_only lat_only mask_guided vertebra vertebra_ap vertebra_lat",
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    data, datalist = _data(out, args.cases)
    if args.predict_masks:
        if args.mask_dir is not None:
            raise SystemExit("pass --mask-dir or --predict-masks, not both")
        args.mask_dir = _predicted_masks(out, data, dict(zip(("AP", "LAT"), args.seg_models, strict=True)))
    dl = json.loads(datalist.read_text())
    n_train = sum(r["fold"] != 0 for r in dl["training"])
    models = dict(MODELS)
    if args.mask_dir is not None:
        masks = args.mask_dir.resolve()
        models["mask_guided"] = {"views": ["AP", "LAT"], "mask_guided": True, "mask_dir": masks}
        for name, views in (("vertebra", ["AP", "LAT"]), ("vertebra_ap", ["AP"]), ("vertebra_lat", ["LAT"])):
            models[name] = {"views": views, "vertebra_level": True, "mask_dir": masks}
        if args.mask_structures:
            for name in ("mask_guided", "vertebra", "vertebra_ap", "vertebra_lat"):
                models[name]["mask_structures"] = list(args.mask_structures)
    if args.models:
        unknown = sorted(set(args.models) - set(models))
        if unknown:
            raise SystemExit(f"unknown or unavailable models {unknown} (mask_guided and vertebra* need --mask-dir)")
        models = {k: v for k, v in models.items() if k in args.models}
    model_overrides = {}
    if args.backbone:
        model_overrides["backbone"] = args.backbone
    if args.spatial_size:
        model_overrides["spatial_size"] = list(args.spatial_size)
    if args.learning_rate:
        model_overrides["learning_rate"] = args.learning_rate
    # Keys of train.json alone: evaluate.json would refuse them.
    train_overrides = {}
    if args.channels_last:
        train_overrides["channels_last"] = args.channels_last == "true"
    results = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "cases": args.cases,
        "train_patients": n_train,
        "validation_patients": len(dl["training"]) - n_train,
        "test_patients": len(dl["testing"]),
        "models": {},
    }
    previous = out / "results.json"
    if previous.exists():
        # Models benchmarked by an earlier call (each with its own settings) stay in the table.
        results["models"] = json.loads(previous.read_text()).get("models", {})
    for name, overrides in models.items():
        run_dir = out / name
        common = {"dataset_dir": data, "datalist": datalist, "output_dir": run_dir, **overrides, **model_overrides}
        train_s = None
        if not (run_dir / "models" / "model.pt").exists():
            train = {**common, **train_overrides, "train#trainer#max_epochs": args.epochs, "progress_bar": False}
            if args.batch_size:
                train["batch_size"] = args.batch_size
            train_s = run_bundle(config_files(BUNDLE, "train.json"), train, log=run_dir / "train.log")
        eval_start = time.perf_counter()
        run_bundle(config_files(BUNDLE, "evaluate.json"), common, log=run_dir / "evaluate.log")
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
        results["models"][name] = {
            "date": date.today().isoformat(),
            "epochs": args.epochs if train_s is not None else results["models"].get(name, {}).get("epochs"),
            "overrides": {k: str(v) for k, v in {**model_overrides, **train_overrides}.items()},
            "views": overrides["views"],
            "mask_guided": bool(overrides.get("mask_guided", False)),
            "vertebra_level": bool(overrides.get("vertebra_level", False)),
            "mask_structures": overrides.get("mask_structures"),
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
        f"{len(dl['testing'])} test patients:"
    )
    print(f"{'model':<12} {'views':<8} {'epochs':>6} {'accuracy':>8} {'ROC AUC':>8} {'train min':>9}")
    for name, r in results["models"].items():
        acc = "n/a" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}"
        auc = "n/a" if r["test_roc_auc"] is None else f"{r['test_roc_auc']:.3f}"
        train_min = "reused" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f}"
        print(f"{name:<12} {'+'.join(r['views']):<8} {r.get('epochs') or '?':>6} {acc:>8} {auc:>8} {train_min:>9}")
    print(f"\nwritten: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
