"""Benchmark of ``spine-monai analyze``: patients per second from packaged bundles, both views and the classifier.

    python -m pipelines.bench_analyze [--out bench_output/analyze] [--patients 4 12] [--size 1900x2900] [--repeats 2]

Trains the AP, LAT and classification bundles on 96 synthetic patients (384x576) long enough for the segmentation
bundles to draw plausible masks (the schedule of ``make bench-xray``: AP 30, LAT 50 epochs), packages them as zips,
then times ``spine-monai analyze`` in a fresh process on held-out synthetic patients of ``--size`` (default the ELL888
films' 1900x2900), for each count in ``--patients``, ``--repeats`` times in turn. The time per patient is the slope
between the fastest run of each count, which leaves out the start-up (Python, torch, unzipping) that a batch pays
once and most of the VM's run-to-run drift; the wall time per patient of each whole run is printed too, and the
vertebral bodies the measurements found against those the generator drew, which says whether the masks were
plausible. Results go to ``results.json``. Trained bundles are reused while their schedule is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

from pipelines.common import REPO, config_files, run_bundle
from spine_monai.data import build_xray_datalist, write_datalist
from spine_monai.package import package_bundle
from spine_monai.synthetic.xray import parse_size, write_xray_dataset

# Measurement time grows with the blobs a mask holds: a barely trained network speckles the film with hundreds of
# them, which no user's bundle does. The classifier's cost does not depend on how well it learnt.
TRAIN_PATIENTS = 96
BUNDLES = {"spine_xray_ap_seg": 30, "spine_xray_lat_seg": 50, "spine_xray_cls": 5}


def _bundles(out: Path) -> Path:
    """The three bundles trained on a synthetic set and packaged into ``out/bundles``."""
    zips = out / "bundles"
    schedule = {"patients": TRAIN_PATIENTS, "epochs": BUNDLES}
    done = zips / "schedule.json"
    if done.is_file() and json.loads(done.read_text()) == schedule:
        return zips
    data, datalist = out / f"train_data_{TRAIN_PATIENTS}", out / "train_datalist.json"
    if not (data / "ground_truth.json").exists():
        write_xray_dataset(data, TRAIN_PATIENTS, seed=77)
    write_datalist(datalist, build_xray_datalist(data, folds=4, test_fraction=0.0, seed=77))
    for bundle, epochs in BUNDLES.items():
        run_dir = out / "runs" / f"{bundle}_{TRAIN_PATIENTS}p_e{epochs}"
        overrides = {
            "dataset_dir": data,
            "datalist": datalist,
            "output_dir": run_dir,
            "train#trainer#max_epochs": epochs,
            "val_interval": epochs,
            "progress_bar": False,
        }
        run_bundle(config_files(bundle, "train.json"), overrides, log=out / f"train_{bundle}.log")
        package_bundle(REPO / "bundles" / bundle, zips, ckpt=run_dir / "models" / "model.pt")
    (zips / "schedule.json").write_text(json.dumps(schedule) + "\n")
    return zips


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "analyze")
    parser.add_argument("--patients", type=int, nargs=2, default=[4, 12], metavar=("FEW", "MANY"))
    parser.add_argument("--size", default="1900x2900", help="WxH of the analysed films (default 1900x2900)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each count, alternating (default 2)")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    few, many = sorted(args.patients)
    if few >= many:
        parser.error("--patients needs two different counts")
    out = args.out.resolve()
    zips = _bundles(out)
    films = out / f"films_{size[0]}x{size[1]}"
    if not (films / "ground_truth.json").exists():
        write_xray_dataset(films, many, seed=4321, size=size)
    patients = sorted(p for cls in ("Normal", "Damaged") for p in (films / cls).glob("ID (*)"))
    seconds: dict[int, list[float]] = {few: [], many: []}
    for _ in range(args.repeats):
        for count in (few, many):
            took = _analyze(out, zips, patients, count)
            if took is None:
                return 1
            seconds[count].append(took)
            print(f"{count} patients: {took:.1f} s ({took / count:.2f} s per patient, start-up included)")
    best = {count: min(runs) for count, runs in seconds.items()}
    per_patient = (best[many] - best[few]) / (many - few)
    bodies = _bodies(out / f"analyze_{many}" / "measurements.csv", films / "ground_truth.json")
    results = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.processor() or 'unknown CPU'}",
        "film_size": list(size),
        "train": {"patients": TRAIN_PATIENTS, "epochs": BUNDLES},
        "seconds": {str(k): [round(v, 1) for v in runs] for k, runs in seconds.items()},
        "seconds_per_patient": round(per_patient, 2),
        "patients_per_10_s": round(10.0 / per_patient, 2),
        "bodies_found_drawn": bodies,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(
        f"per patient (slope {few}->{many} of the fastest of {args.repeats} runs each): {per_patient:.2f} s, "
        f"{10.0 / per_patient:.2f} patients per 10 s"
    )
    for view, (found, drawn) in bodies.items():
        print(f"{view}: {found} vertebral bodies measured on {many} films, {drawn} drawn")
    return 0


def _analyze(out: Path, zips: Path, patients: list[Path], count: int) -> float | None:
    """Seconds ``spine-monai analyze`` takes, in a fresh process, on the first ``count`` patients; None if it failed."""
    chosen = out / f"input_{count}"
    if not chosen.exists():
        for p in patients[:count]:
            target = chosen / p.parent.name / p.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(p, target)
    result = out / f"analyze_{count}"
    cmd = [sys.executable, "-m", "spine_monai", "analyze", "--bundles", str(zips), "--input", str(chosen)]
    cmd += ["--out", str(result), "--no-progress"]
    start = time.perf_counter()
    with open(out / f"analyze_{count}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    took = time.perf_counter() - start
    if rc not in (0, 1):
        print(f"analyze failed (exit {rc}); see {out / f'analyze_{count}.log'}")
        return None
    return took


def _bodies(measurements: Path, truth: Path) -> dict[str, list[int]]:
    """Per view, the vertebral bodies the measurements found and those the generator drew, over the analysed films."""
    table = pd.read_csv(measurements)
    cases = json.loads(truth.read_text())["cases"]
    counts = {}
    for view, rows in table[table["row_type"] == "vertebra"].groupby("view"):
        drawn = sum(len(cases[p][view]["vertebrae"]) for p in rows["patient"].unique())
        counts[str(view)] = [len(rows), drawn]
    return counts


if __name__ == "__main__":
    raise SystemExit(main())
