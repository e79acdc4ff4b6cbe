"""Benchmark of the MRI slice-segmentation bundle on a fixed synthetic set.

    python -m pipelines.bench_mri [--out bench_output/mri] [--cases 30] [--epochs 40]

Generates synthetic T1w/T2w lumbar volumes (seed 4321), holds 20 % out as the testing list, trains with fold 0
validating, evaluates on the testing volumes at their original resolution, and prints per-class IoU and Dice, the
mean IoU with and without background (the MIDAS table's form), pixel accuracy, mean accuracy, frequency-weighted
IoU and the wall times. Results also go to ``results.json``. Runs already trained are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import pandas as pd

from pipelines.common import REPO, config_files, run_bundle
from spine_monai.data import build_mri_datalist, write_datalist
from spine_monai.synthetic.mri import write_mri_dataset

BUNDLE = "spine_mri_seg"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "mri")
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--variant", default=None, help="a variant config merged on top, e.g. attention_unet.json")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    data, datalist = out / "data", out / "datalist.json"
    if not data.exists():
        write_mri_dataset(data, args.cases, seed=4321)
    if not datalist.exists():
        write_datalist(datalist, build_mri_datalist(data, folds=5, test_fraction=0.2, seed=4321))
    dl = json.loads(datalist.read_text())
    extra = [args.variant] if args.variant else []
    run_dir = out / ("unet" if not args.variant else Path(args.variant).stem)
    common = {"dataset_dir": data, "datalist": datalist, "output_dir": run_dir}
    train_s = None
    if not (run_dir / "models" / "model.pt").exists():
        train_s = run_bundle(
            config_files(BUNDLE, "train.json", *extra),
            {**common, "train#trainer#max_epochs": args.epochs, "val_interval": 5, "progress_bar": False},
            log=run_dir / "train.log",
        )
    start = time.perf_counter()
    run_bundle(
        config_files(BUNDLE, "evaluate.json", *extra),
        {**common, "write_predictions": False},
        log=run_dir / "evaluate.log",
    )
    eval_s = time.perf_counter() - start
    summary = pd.read_csv(run_dir / "eval" / "summary.csv")
    overall = pd.read_csv(run_dir / "eval" / "overall.csv").iloc[-1].drop("case").astype(float)
    n_train = sum(r["fold"] != 0 for r in dl["training"])
    print(
        f"\nMRI ({n_train} train / {len(dl['testing'])} test volumes, {args.epochs} epochs, "
        f"train {train_s / 60 if train_s else float('nan'):.1f} min, evaluate {eval_s:.0f} s):"
    )
    print(summary[["class", "IoU", "Dice", "FP", "FN"]].to_string(index=False))
    print("\n" + overall.round(4).to_string())
    results = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "train_volumes": n_train,
        "test_volumes": len(dl["testing"]),
        "epochs": args.epochs,
        "train_seconds": train_s,
        "evaluate_seconds": eval_s,
        "classes": summary.set_index("class")[["IoU", "Dice"]].round(4).to_dict(orient="index"),
        "overall": overall.round(4).to_dict(),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwritten: {run_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
