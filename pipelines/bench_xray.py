"""Benchmark of the X-ray segmentation bundles on a fixed synthetic set.

    python -m pipelines.bench_xray [--out bench_output/xray] [--epochs N] [--views AP LAT] [--size 384x576]

Generates 160 synthetic patients (seed 1234, 384x576 or ``--size``, e.g. 1900x2900 as the ELL888 films, in another
``--out``), holds 40 out as the testing list, trains each bundle on the remaining folds with fold 0 validating (30
epochs for AP, 50 for LAT, whose five structures include the thin lines, unless ``--epochs`` is given), evaluates on
the testing list at the original resolution, and prints per-structure Dice, Jaccard and tolerance Dice with the wall
times. Results are also written to ``results.json``, by view, and by view and variant (``AP+hires``) for a
``--variant`` run. Runs already trained are reused; delete the output folder to start over.
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
from spine_monai.data import build_xray_datalist, write_datalist
from spine_monai.synthetic.xray import parse_size, write_xray_dataset

BUNDLES = {"AP": "spine_xray_ap_seg", "LAT": "spine_xray_lat_seg"}
EPOCHS = {"AP": 30, "LAT": 50}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "xray")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every view (default: AP 30, LAT 50)")
    parser.add_argument("--views", nargs="+", default=["AP", "LAT"], choices=sorted(BUNDLES))
    parser.add_argument("--variant", default=None, help="a variant config merged on top, e.g. attention_unet.json")
    parser.add_argument("--size", default="384x576", help="WxH of the synthetic films (default 384x576)")
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size)
    except ValueError as e:
        parser.error(str(e))
    out = args.out.resolve()
    data, datalist = out / "data", out / "datalist.json"
    if not (data / "ground_truth.json").exists():
        write_xray_dataset(data, 160, seed=1234, size=size)
    made = tuple(json.loads((data / "ground_truth.json").read_text())["size"])
    if made != size:
        parser.error(f"{data} holds films of {made[0]}x{made[1]}, not {args.size}: use another --out")
    if not datalist.exists():
        write_datalist(datalist, build_xray_datalist(data, folds=5, test_fraction=0.25, seed=1234))
    dl = json.loads(datalist.read_text())
    n_train = sum(r["fold"] != 0 for r in dl["training"])
    results = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "film_size": list(size),
        "train_patients": n_train,
        "test_patients": len(dl["testing"]),
        "views": {},
    }
    for view in args.views:
        bundle = BUNDLES[view]
        epochs = args.epochs or EPOCHS[view]
        extra = [args.variant] if args.variant else []
        # The schedule is part of the name, so a run trained for another number of epochs is not reused.
        run_dir = out / (f"{view.lower()}_e{epochs}" + (f"_{Path(args.variant).stem}" if args.variant else ""))
        common = {"dataset_dir": data, "datalist": datalist, "output_dir": run_dir}
        train_s = None
        if not (run_dir / "models" / "model.pt").exists():
            train_s = run_bundle(
                config_files(bundle, "train.json", *extra),
                {**common, "train#trainer#max_epochs": epochs, "val_interval": 5, "progress_bar": False},
                log=run_dir / "train.log",
            )
        eval_start = time.perf_counter()
        run_bundle(
            config_files(bundle, "evaluate.json", *extra),
            {**common, "write_predictions": False},
            log=run_dir / "evaluate.log",
        )
        summary = pd.read_csv(run_dir / "eval" / "summary.csv")
        # A variant's results sit beside the default's, not in their place.
        results["views"][view + (f"+{Path(args.variant).stem}" if args.variant else "")] = {
            "variant": Path(args.variant).name if args.variant else None,
            "epochs": epochs,
            "train_seconds": train_s,
            "evaluate_seconds": time.perf_counter() - eval_start,
            "structures": summary.set_index("structure")[["Dice", "Jaccard", "ToleranceDice", "FP", "FN"]]
            .round(4)
            .to_dict(orient="index"),
        }
        print(
            f"\n{view} ({n_train} train / {len(dl['testing'])} test patients, {epochs} epochs, "
            f"train {train_s / 60 if train_s else float('nan'):.1f} min):"
        )
        print(summary[["structure", "Dice", "Jaccard", "ToleranceDice", "FP", "FN"]].to_string(index=False))
    # A run of some views keeps the other views' results from earlier runs on the same set.
    earlier = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    results["views"] = {**earlier.get("views", {}), **results["views"]}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwritten: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
