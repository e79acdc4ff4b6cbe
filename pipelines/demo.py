"""The demo: synthetic films -> datalist -> train, evaluate and run the AP bundle -> measure -> HTML report.

    python -m pipelines.demo [--out demo_output] [--cases 100] [--epochs 40]

Every step is the same command a user runs on real data; they are printed as they run. Steps whose outputs
already exist are skipped, so an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

import pandas as pd

from pipelines.common import REPO, config_files, run_bundle
from spine_monai.cli import main as main_cli
from spine_monai.data import build_xray_datalist, write_datalist
from spine_monai.synthetic.xray import write_xray_dataset

BUNDLE = "spine_xray_ap_seg"


def _spine_monai(args: list[str]) -> None:
    """Run a ``spine-monai`` command as a user would, printing it first; a non-zero status stops the demo."""
    print("\n$ spine-monai " + " ".join(shlex.quote(a) for a in args), flush=True)
    status = main_cli(args)
    if status not in (0, 1):  # 1: some inputs had problems, listed above; the rest was done
        raise SystemExit(status)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "demo_output", help="demo folder (default demo_output)")
    parser.add_argument("--cases", type=int, default=100, help="synthetic patients (default 100)")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs (default 40, ~4 min on 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    data, datalist, run_dir = out / "data", out / "datalist.json", out / "ap"
    start = time.perf_counter()

    if not (data / "ground_truth.json").exists():
        print(f"1. synthetic data: {args.cases} patients in the ELL888 layout -> {data}")
        write_xray_dataset(data, args.cases, seed=args.seed)
    else:
        print(f"1. synthetic data: reusing {data}")
    if not datalist.exists():
        dl = build_xray_datalist(data, folds=5, test_fraction=0.2, seed=args.seed)
        write_datalist(datalist, dl)
        print(f"2. datalist: {len(dl['training'])} training records in 5 folds, {len(dl['testing'])} testing")
    else:
        print(f"2. datalist: reusing {datalist}")

    common = {"dataset_dir": data, "datalist": datalist, "output_dir": run_dir}
    if not (run_dir / "models" / "model.pt").exists():
        print(f"3. training the AP bundle for {args.epochs} epochs (fold 0 validates)")
        train_s = run_bundle(
            config_files(BUNDLE, "train.json"),
            {**common, "fold": 0, "train#trainer#max_epochs": args.epochs, "val_interval": min(5, args.epochs)},
        )
        print(f"   trained in {train_s / 60:.1f} min")
    else:
        print(f"3. training: reusing {run_dir / 'models' / 'model.pt'}")
    print("4. evaluating on the held-out testing list at the original resolution")
    run_bundle(config_files(BUNDLE, "evaluate.json"), common)
    print("5. inference on the testing images")
    run_bundle(config_files(BUNDLE, "inference.json"), {**common, "infer_split": "test"})

    print("6. measuring the predicted vertebrae (instances, levels, Cobb angle)")
    measure_csv = out / "measure" / "measure.csv"
    _spine_monai(
        [
            "measure",
            "--masks",
            str(run_dir / "predictions"),
            "--view",
            "AP",
            "--out",
            str(measure_csv),
            "--images",
            str(data),
        ]
    )
    print("7. writing the report")
    report = out / "report.html"
    _spine_monai(
        [
            "report",
            "--eval-dir",
            str(run_dir),
            "--measure",
            str(measure_csv),
            "--out",
            str(report),
            "--title",
            "spine_monai demo: AP segmentation on synthetic films",
        ]
    )

    summary = pd.read_csv(run_dir / "eval" / "summary.csv")
    print("\nper-structure results on the testing list (original resolution):")
    print(summary[["structure", "cases", "Dice", "Jaccard", "FP", "FN", "ToleranceDice"]].to_string(index=False))
    print(
        f"""
done in {(time.perf_counter() - start) / 60:.1f} min. Where things are:
  metrics        {run_dir / "eval" / "summary.csv"}
                 {run_dir / "eval" / "per_case.csv"}
  masks          {run_dir / "predictions"}/<class>/ID (<n>)/AP/Ap_*.png  (one 1-bit PNG per structure)
  overlays       {run_dir / "predictions"}/<class>/ID (<n>)/AP/AP_overlay.png
                 {run_dir / "eval" / "predictions"}  (prediction filled, truth outlined)
  measurements   {measure_csv}
  report         {report}  (open it in a browser)
  checkpoints    {run_dir / "models"}
  TensorBoard    tensorboard --logdir {run_dir / "tensorboard"}"""
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
