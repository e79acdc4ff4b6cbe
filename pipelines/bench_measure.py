"""Benchmark of ``spine_monai.measure`` against the synthetic generator's exact geometry.

    python -m pipelines.bench_measure [--cases 60] [--seed 77] [--out bench_output/measure] [--masks DIR]

Generates a synthetic set under ``<out>/synth_seed<seed>_n<cases>`` (reused when present), measures its
ground-truth masks (or, with ``--masks``, predicted masks in the same layout) with ``measure_tree``, and scores
against ``ground_truth.json``:

* Cobb angle (AP): MAE in degrees, SMAPE %, and how often both end vertebrae are the true ones;
* lumbar lordosis (LAT): MAE in degrees;
* level labelling: each true body is matched to the measured body nearest its centre (within half its
  height); accuracy is the share of true bodies, over both views, whose match carries the true level name;
* fractured levels (LAT): a wedge or burst fracture is detected when the measured Genant grade is >= 1 at its
  level, a listhesis when the measured slip at its level exceeds ``--listhesis-threshold`` %; every other
  positive level of every patient is a false positive;
* corner error: median distance in pixels between matched true and measured corners.

Prints the figures and writes ``<out>/results.json`` and ``<out>/measurements.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from spine_monai.measure import measure_tree
from spine_monai.measure.command import CORNER_NAMES
from spine_monai.synthetic.xray import write_xray_dataset


def _dataset(out: Path, cases: int, seed: int, workers: int | None) -> Path:
    data = out / f"synth_seed{seed}_n{cases}"
    if (data / "ground_truth.json").is_file():
        print(f"reusing {data}")
    else:
        print(f"generating {cases} synthetic patients (seed {seed}) in {data}")
        write_xray_dataset(data, cases, seed=seed, workers=workers)
    return data


def match_bodies(truth_vertebrae: list[dict], measured: pd.DataFrame) -> list[tuple[dict, pd.Series | None]]:
    """Pair each true body with the measured body nearest its centre, if within half its height."""
    centres = measured[["centroid_x", "centroid_y"]].to_numpy(dtype=float)
    pairs = []
    for tv in truth_vertebrae:
        corners = np.asarray(tv["corners"], dtype=float)
        centre = corners.mean(axis=0)
        height = 0.5 * (np.linalg.norm(corners[3] - corners[0]) + np.linalg.norm(corners[2] - corners[1]))
        if len(centres) == 0:
            pairs.append((tv, None))
            continue
        d = np.linalg.norm(centres - centre, axis=1)
        k = int(np.argmin(d))
        pairs.append((tv, measured.iloc[k] if d[k] < 0.5 * height else None))
    return pairs


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def score(df: pd.DataFrame, truth: dict, listhesis_threshold: float) -> dict:
    """Compare ``measure_tree`` rows with the generator's ground truth; see the module docstring."""
    vert = df[df["row_type"] == "vertebra"]
    summ = df[df["row_type"] == "summary"].set_index(["patient", "view"])
    cobb_err, cobb_ape, cobb_ends, lord_err = [], [], [], []
    labelled = total_bodies = 0
    corner_err: list[float] = []
    detections: set[tuple[str, str, str]] = set()
    actual: set[tuple[str, str, str]] = set()
    grade_hits = grade_total = 0
    for patient, case in truth["cases"].items():
        for f in case["fractures"]:
            actual.add((patient, f["level"], "listhesis" if f["type"] == "listhesis" else "compression"))
        if (patient, "AP") in summ.index:
            row = summ.loc[(patient, "AP")]
            true, meas = case["AP"]["cobb_angle"], float(row["cobb_angle_deg"])
            cobb_err.append(abs(meas - true))
            cobb_ape.append(2 * abs(meas - true) / (abs(meas) + abs(true)) if meas or true else 0.0)
            cobb_ends.append([row["cobb_upper"], row["cobb_lower"]] == case["AP"]["cobb_levels"])
        if (patient, "LAT") in summ.index:
            meas = float(summ.loc[(patient, "LAT")]["lordosis_angle_deg"])
            if math.isfinite(meas):
                lord_err.append(abs(meas - case["LAT"]["lordosis_angle"]))
            lat = vert[(vert["patient"] == patient) & (vert["view"] == "LAT")]
            for _, r in lat.iterrows():
                if not isinstance(r["level"], str):
                    continue
                if pd.notna(r["genant_grade"]) and r["genant_grade"] >= 1:
                    detections.add((patient, r["level"], "compression"))
                if pd.notna(r["listhesis_pct"]) and abs(r["listhesis_pct"]) > listhesis_threshold:
                    detections.add((patient, r["level"], "listhesis"))
            grades = {r["level"]: r["genant_grade"] for _, r in lat.iterrows()}
            for f in case["fractures"]:
                if "genant_grade" in f:
                    grade_total += 1
                    grade_hits += bool(grades.get(f["level"]) == f["genant_grade"])
        for view in ("AP", "LAT"):
            measured = vert[(vert["patient"] == patient) & (vert["view"] == view)]
            for tv, mv in match_bodies(case[view]["vertebrae"], measured):
                total_bodies += 1
                if mv is None:
                    continue
                labelled += mv["level"] == tv["level"]
                got = np.array([[mv[f"{c}_x"], mv[f"{c}_y"]] for c in CORNER_NAMES], dtype=float)
                corner_err += np.linalg.norm(got - np.asarray(tv["corners"]), axis=1).tolist()
    tp = len(detections & actual)
    n_cases = len(truth["cases"])
    return {
        "patients": n_cases,
        "measured_ap": len(cobb_err),
        "measured_lat": len(lord_err),
        "cobb_mae_deg": float(np.mean(cobb_err)) if cobb_err else math.nan,
        "cobb_smape_pct": 100 * float(np.mean(cobb_ape)) if cobb_ape else math.nan,
        "cobb_end_levels_exact": float(np.mean(cobb_ends)) if cobb_ends else math.nan,
        "lordosis_mae_deg": float(np.mean(lord_err)) if lord_err else math.nan,
        "level_accuracy": _ratio(labelled, total_bodies),
        "true_bodies": total_bodies,
        "fracture_precision": _ratio(tp, len(detections)),
        "fracture_recall": _ratio(tp, len(actual)),
        "fractures_true": len(actual),
        "fractures_detected": len(detections),
        "fractures_true_positive": tp,
        "genant_grade_exact_at_true_fractures": _ratio(grade_hits, grade_total),
        "corner_error_median_px": float(np.median(corner_err)) if corner_err else math.nan,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=60, help="synthetic patients (default 60)")
    parser.add_argument("--seed", type=int, default=77, help="dataset seed (default 77)")
    parser.add_argument("--out", type=Path, default=Path("bench_output/measure"), help="output folder")
    parser.add_argument("--masks", type=Path, default=None, help="predicted masks in the same layout (default: truth)")
    parser.add_argument("--listhesis-threshold", type=float, default=10.0, help="slip %% that counts (default 10)")
    parser.add_argument("--overlay", action="store_true", help="also write the overlay PNGs")
    parser.add_argument("--workers", type=int, default=None, help="processes for generating the data")
    args = parser.parse_args(argv)

    data = _dataset(args.out, args.cases, args.seed, args.workers)
    masks = args.masks or data
    start = time.perf_counter()
    df = measure_tree(masks, out_csv=args.out / "measurements.csv", overlay=args.overlay)
    elapsed = time.perf_counter() - start
    truth = json.loads((data / "ground_truth.json").read_text())
    results = score(df, truth, args.listhesis_threshold)
    n_views = int((df["row_type"] == "summary").sum())
    results.update(
        masks=str(masks),
        source="ground truth" if args.masks is None else "predicted",
        listhesis_threshold_pct=args.listhesis_threshold,
        problems=df.attrs["problems"],
        seconds=round(elapsed, 2),
        seconds_per_view=round(elapsed / max(n_views, 1), 3),
    )
    r = results
    print(f"\nmeasure benchmark on {r['source']} masks: {r['patients']} patients, {len(r['problems'])} problems")
    print(
        f"  Cobb angle (AP, n={r['measured_ap']}):  MAE {r['cobb_mae_deg']:.2f} deg, SMAPE {r['cobb_smape_pct']:.1f}%, "
        f"end levels exact {100 * r['cobb_end_levels_exact']:.0f}%"
    )
    print(f"  lordosis (LAT, n={r['measured_lat']}):   MAE {r['lordosis_mae_deg']:.2f} deg")
    print(f"  level labels:            {100 * r['level_accuracy']:.1f}% of {r['true_bodies']} true bodies")
    print(
        f"  fractured levels (LAT):  precision {100 * r['fracture_precision']:.1f}%, "
        f"recall {100 * r['fracture_recall']:.1f}% ({r['fractures_true_positive']} of {r['fractures_true']} true, "
        f"{r['fractures_detected']} detected; listhesis > {args.listhesis_threshold:g}%)"
    )
    print(f"  Genant grade exact at true wedge/burst levels: {100 * r['genant_grade_exact_at_true_fractures']:.0f}%")
    print(f"  corner error:            median {r['corner_error_median_px']:.2f} px")
    print(f"  time:                    {elapsed:.1f} s ({r['seconds_per_view']:.2f} s per view)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
