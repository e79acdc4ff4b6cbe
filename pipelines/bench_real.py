"""Benchmark on public real images: the AP bundle on AASCE 2019 films, the MRI bundle on FastCleverSeg volumes.

    python -m pipelines.bench_real --aasce DIR [--mri DIR] [--out bench_output/real] [--epochs N]
        [--baseline-python .venv-smp/bin/python] [--parts ap baseline mri]

``--aasce`` is the AASCE 2019 folder as published (``boostnet_labeldata``: ``data/`` and ``labels/``), ``--mri`` the
``ImageDatasets`` folder of the FastCleverSeg repository. Both are converted once under ``<out>/data`` with the
package's importer and the dataset recipe; nothing is downloaded.

AP (``ap``): the AP bundle as shipped, on its vertebra channel (``--structures "['Ap_Vertebra']"``), trains on the
AASCE training films with fold 0 of five validating, and is evaluated on the test films. The test films are scored
here, by one function for every model: the vertebra Dice of each predicted mask against the imported one at the
film's size, and the three AASCE Cobb angles that ``spine-monai measure`` finds in the predicted masks against the
published ones (SMAPE as the challenge scores it, MAE in degrees). A film whose mask cannot be measured counts with
angles of 0, an error of 100 % for it. The angles measured from the ground-truth corners and masks are the
measurement's own floor.

Baseline (``baseline``): ``pipelines.baseline_smp`` (a plain PyTorch loop with an smp U-Net, resnet34 encoder, no
pretrained weights) on the same grid for the bundle's training wall time, in its own environment.

MRI (``mri``): the MRI bundle on one channel with a vertebra/background label map trains on VB1 plus the part of
VB2 outside the held-out cases, and is evaluated on the held-out VB2 volumes (vertebral-body Dice).

Prints one table with the published anchors and writes ``<out>/results.json``. Trained runs are reused.
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

import numpy as np
import pandas as pd

from pipelines.bench_measure import match_bodies
from pipelines.common import REPO, config_files, run_bundle
from spine_monai.data import build_mri_datalist, build_xray_datalist, read_mask, write_datalist
from spine_monai.data.datalist import assign_splits
from spine_monai.data.landmarks import import_landmarks, read_aasce
from spine_monai.measure import measure_tree
from spine_monai.measure.cobb import REGIONAL_COBB, cobb_smape, regional_cobb_angles
from spine_monai.measure.command import CORNER_NAMES
from spine_monai.workflow import parse_override

AP_BUNDLE = "spine_xray_ap_seg"
MRI_BUNDLE = "spine_mri_seg"
STRUCTURE = "Ap_Vertebra"
MRI_HELD_OUT = 6
# Overrides that only train.json holds; evaluate.json gets the others, so that it rebuilds the trained network.
TRAINING_ONLY = {
    "train#trainer#max_epochs",
    "val_interval",
    "gap_weight",
    "learning_rate",
    "batch_size",
    "progress_bar",
}
ANCHORS = {
    "AASCE test vertebra Dice": "published U-Nets ~0.90-0.93",
    "Cobb SMAPE, predicted masks": "AASCE 2019 winner 21.71 % (hidden test set); ~8-10 % on this split",
    "MRI vertebral-body Dice": "SPINEPS 0.92 (SPIDER)",
}


def _aasce_data(src: Path, data: Path) -> dict[str, Path]:
    """Import both AASCE splits once, and write a 5-fold training datalist and a test-only one."""
    roots = {}
    for split in ("training", "test"):
        root = data / f"aasce_{split}"
        if not (root / "landmarks.json").is_file():
            films, problems = read_aasce(src, split)
            doc = import_landmarks(films, root, source=str(src), fmt="aasce", problems=problems)
            print(f"imported {len(doc['cases'])} AASCE {split} films, left out {len(doc['problems'])}:")
            for p in doc["problems"]:
                print(f"  - {p['path']}: {p['reason']}")
        datalist = root / "datalist.json"
        if not datalist.is_file():
            folds, test_fraction = (5, 0.0) if split == "training" else (1, 1.0)
            doc = build_xray_datalist(
                root, folds=folds, test_fraction=test_fraction, seed=0, views=("AP",), structures=(STRUCTURE,)
            )
            write_datalist(datalist, doc)
        roots[split] = root
    return roots


def score_dice(pred_root: Path, truth_root: Path, patients: list[str]) -> pd.Series:
    """Each film's vertebra Dice at its own size; a film without a prediction scores 0."""
    scores = {}
    for patient in patients:
        truth = read_mask(truth_root / patient / "AP" / f"{STRUCTURE}.png")
        path = pred_root / patient / "AP" / f"{STRUCTURE}.png"
        if not path.is_file():
            scores[patient] = 0.0
            continue
        pred = read_mask(path, expected_size=truth.shape[::-1])
        total = pred.sum() + truth.sum()
        scores[patient] = float(2 * (pred & truth).sum() / total) if total else 1.0
    return pd.Series(scores, name="dice")


def score_cobb(mask_root: Path, truth: dict, out_csv: Path, images: Path | None = None) -> dict:
    """Measure the three Cobb angles in a tree of vertebra masks and score them against the published ones."""
    df = measure_tree(mask_root, "AP", out_csv=out_csv, images_dir=images, overlay=images is not None, anchor="L5")
    summary = df[df["row_type"] == "summary"].set_index("patient")
    vertebrae = df[df["row_type"] == "vertebra"]
    predicted, published, bodies = [], [], []
    matched = named = total = 0
    corner_error: list[float] = []
    for patient, case in truth["cases"].items():
        published.append([case["AP"]["cobb_angles"][n] for n in REGIONAL_COBB])
        for tv, mv in match_bodies(case["AP"]["vertebrae"], vertebrae[vertebrae["patient"] == patient]):
            total += 1
            if mv is not None:
                matched += 1
                named += mv["level"] == tv["level"]
                got = np.array([[mv[f"{c}_x"], mv[f"{c}_y"]] for c in CORNER_NAMES], dtype=float)
                corner_error += np.linalg.norm(got - np.asarray(tv["corners"]), axis=1).tolist()
        if patient in summary.index:
            row = summary.loc[patient]
            predicted.append([float(row[f"cobb_{n}_deg"]) for n in REGIONAL_COBB])
            bodies.append(int(row["n_vertebrae"]))
        else:
            predicted.append([0.0, 0.0, 0.0])
            bodies.append(0)
    figures = _cobb_figures(np.array(predicted), np.array(published), bodies, bodies.count(0))
    figures.update(
        bodies_found_pct=round(100 * matched / max(total, 1), 1),
        levels_named_pct=round(100 * named / max(total, 1), 1),
        corner_error_median_px=round(float(np.median(corner_error)), 1) if corner_error else None,
    )
    return figures


def _cobb_figures(predicted: np.ndarray, published: np.ndarray, bodies: list[int] | None, unmeasured: int) -> dict:
    out = {
        "smape_pct": round(cobb_smape(predicted, published), 2),
        "mae_deg": round(float(np.abs(predicted - published).mean()), 2),
        "mae_deg_by_angle": dict(
            zip(REGIONAL_COBB, np.abs(predicted - published).mean(axis=0).round(2).tolist(), strict=True)
        ),
        "films": len(published),
        "unmeasured": unmeasured,
    }
    if bodies is not None:
        out["films_with_17_bodies"] = int(sum(b == 17 for b in bodies))
    return out


def cobb_from_corners(truth: dict) -> dict:
    """The floor: the three angles computed from the annotated corners themselves."""
    predicted, published = [], []
    for case in truth["cases"].values():
        corners = np.array([v["corners"] for v in case["AP"]["vertebrae"]])
        predicted.append(regional_cobb_angles(corners, case["size"][1]).angles)
        published.append([case["AP"]["cobb_angles"][n] for n in REGIONAL_COBB])
    return _cobb_figures(np.array(predicted), np.array(published), None, 0)


def _ap(args, roots: dict[str, Path], results: dict) -> None:
    out = args.out / "ap"
    overrides = {"structures": [STRUCTURE], "progress_bar": False}
    if args.epochs:
        overrides["train#trainer#max_epochs"] = args.epochs
    overrides.update(dict(args.override))
    train_s = None
    if not (out / "models" / "model.pt").exists():
        train_s = run_bundle(
            config_files(AP_BUNDLE, "train.json"),
            {
                "dataset_dir": roots["training"],
                "datalist": roots["training"] / "datalist.json",
                "fold": 0,
                "output_dir": out,
                **overrides,
            },
            log=out / "train.log",
        )
        (out / "train_seconds.txt").write_text(f"{train_s:.1f}\n")
    train_s = float((out / "train_seconds.txt").read_text())
    start = time.perf_counter()
    run_bundle(
        config_files(AP_BUNDLE, "evaluate.json"),
        {
            "dataset_dir": roots["test"],
            "datalist": roots["test"] / "datalist.json",
            "eval_split": "test",
            "output_dir": out,
            **{k: v for k, v in overrides.items() if k not in TRAINING_ONLY},
        },
        log=out / "evaluate.log",
    )
    results["ap"] = _score_model(out / "eval" / "predictions", roots, out, train_s)
    results["ap"]["evaluate_seconds"] = round(time.perf_counter() - start, 1)
    results["ap"]["bundle_dice"] = float(
        pd.read_csv(out / "eval" / "summary.csv").set_index("structure").loc[STRUCTURE, "Dice"]
    )


def _score_model(pred_root: Path, roots: dict[str, Path], out: Path, train_s: float) -> dict:
    truth = json.loads((roots["test"] / "landmarks.json").read_text())
    dice = score_dice(pred_root, roots["test"], list(truth["cases"]))
    dice.to_csv(out / "dice_per_film.csv", index_label="patient")
    return {
        "train_seconds": round(train_s, 1),
        "dice_mean": round(float(dice.mean()), 4),
        "dice_median": round(float(dice.median()), 4),
        "cobb": score_cobb(pred_root, truth, out / "measure" / "measure.csv", images=roots["test"]),
    }


def _baseline(args, roots: dict[str, Path], results: dict) -> None:
    out = args.out / "baseline_smp"
    budget = args.out / "ap" / "train_seconds.txt"
    if not budget.is_file():
        raise SystemExit("the baseline gets the bundle's training time: run the ap part first")
    if not (out / "summary.json").is_file():
        cmd = [
            str(args.baseline_python),
            "-m",
            "pipelines.baseline_smp",
            "--dataset-dir",
            str(roots["training"]),
            "--datalist",
            str(roots["training"] / "datalist.json"),
            "--test-dir",
            str(roots["test"]),
            "--test-datalist",
            str(roots["test"] / "datalist.json"),
            "--out",
            str(out),
            "--seconds",
            budget.read_text().strip(),
            "--spatial-size",
            *map(str, args.spatial_size),
        ]
        print("\n$ " + " ".join(cmd), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train.log", "w") as log:
            subprocess.run(cmd, check=True, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    summary = json.loads((out / "summary.json").read_text())
    results["baseline_smp"] = _score_model(out / "predictions", roots, out, summary["train_s"] + summary["load_s"])
    results["baseline_smp"]["epochs"] = summary["epochs"]


def _mri(args, results: dict) -> None:
    from pipelines.recipe_fastcleverseg import convert

    data = args.out / "data" / "mri"
    if not (data / "vertebrae" / "recipe.json").is_file():
        _, problems = convert(args.mri, data, ["VB1", "VB2"], "T1w")
        for p in problems:
            print(f"  left out {p}")
    root = data / "vertebrae"
    label_map = json.loads((root / "label_map.json").read_text())
    datalist = root / "datalist.json"
    if not datalist.is_file():
        doc = build_mri_datalist(root, channels=("T1w",), folds=5, label_map=label_map)
        records = [{k: v for k, v in r.items() if k != "fold"} for r in doc["training"]]
        vb2 = sorted(r["patient"] for r in records if r["patient"].startswith("VB2"))
        held_out = set(np.random.default_rng(0).permutation(vb2)[:MRI_HELD_OUT].tolist())
        doc["training"], _ = assign_splits(
            [r for r in records if r["patient"] not in held_out], folds=5, seed=0, stratify_key=None
        )
        doc["testing"] = [r for r in records if r["patient"] in held_out]
        write_datalist(datalist, doc)
    out = args.out / "mri"
    common = {"dataset_dir": root, "datalist": datalist, "output_dir": out, "channels": ["T1w"], "label_map": label_map}
    if not (out / "models" / "model.pt").exists():
        train_s = run_bundle(
            config_files(MRI_BUNDLE, "train.json"),
            {
                **common,
                "progress_bar": False,
                **({"train#trainer#max_epochs": args.mri_epochs} if args.mri_epochs else {}),
            },
            log=out / "train.log",
        )
        (out / "train_seconds.txt").write_text(f"{train_s:.1f}\n")
    run_bundle(
        config_files(MRI_BUNDLE, "evaluate.json"), {**common, "write_predictions": False}, log=out / "evaluate.log"
    )
    summary = pd.read_csv(out / "eval" / "summary.csv").set_index("class")
    doc = json.loads(datalist.read_text())
    results["mri"] = {
        "train_seconds": float((out / "train_seconds.txt").read_text()),
        "train_volumes": sum(1 for r in doc["training"] if r["fold"] != 0),
        "test_volumes": len(doc["testing"]),
        "test_cases": sorted(r["case"] for r in doc["testing"]),
        "vertebra_dice": round(float(summary.loc["vertebrae", "Dice"]), 4),
    }


def _table(results: dict) -> str:
    rows = []
    ap, base = results.get("ap"), results.get("baseline_smp")
    floor = results.get("floor", {})
    if ap:
        rows.append(
            (
                "AASCE test vertebra Dice (mean over films)",
                f"{ap['dice_mean']:.3f}",
                f"{base['dice_mean']:.3f}" if base else "-",
                ANCHORS["AASCE test vertebra Dice"],
            )
        )
        rows.append(
            (
                "Cobb SMAPE, predicted masks",
                f"{ap['cobb']['smape_pct']:.1f} %",
                f"{base['cobb']['smape_pct']:.1f} %" if base else "-",
                ANCHORS["Cobb SMAPE, predicted masks"],
            )
        )
        rows.append(
            (
                "Cobb MAE, predicted masks",
                f"{ap['cobb']['mae_deg']:.1f}°",
                f"{base['cobb']['mae_deg']:.1f}°" if base else "-",
                "",
            )
        )
        rows.append(
            (
                "films with 17 bodies found",
                f"{ap['cobb']['films_with_17_bodies']} / {ap['cobb']['films']}",
                f"{base['cobb']['films_with_17_bodies']} / {base['cobb']['films']}" if base else "-",
                "",
            )
        )
        rows.append(
            (
                "training wall time",
                f"{ap['train_seconds'] / 60:.1f} min",
                f"{base['train_seconds'] / 60:.1f} min ({base['epochs']} epochs)" if base else "-",
                "",
            )
        )
    for name, key in (("ground-truth corners", "corners"), ("ground-truth masks", "masks")):
        if key in floor:
            rows.append(
                (
                    f"Cobb SMAPE / MAE, {name}",
                    f"{floor[key]['smape_pct']:.1f} % / {floor[key]['mae_deg']:.1f}°",
                    "",
                    "the measurement's floor",
                )
            )
    if "mri" in results:
        m = results["mri"]
        rows.append(
            (
                f"MRI vertebral-body Dice, {m['test_volumes']} held-out VB2 volumes",
                f"{m['vertebra_dice']:.3f}",
                "",
                ANCHORS["MRI vertebral-body Dice"],
            )
        )
        rows.append(("MRI training wall time", f"{m['train_seconds'] / 60:.1f} min", "", ""))
    header = ("measure", "bundle", "smp baseline", "anchor")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aasce", type=Path, help="the AASCE 2019 folder (boostnet_labeldata)")
    parser.add_argument("--mri", type=Path, help="FastCleverSeg's ImageDatasets folder")
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "real")
    parser.add_argument("--epochs", type=int, default=None, help="AP epochs (default: the bundle's)")
    parser.add_argument("--mri-epochs", type=int, default=None, help="MRI epochs (default: the bundle's)")
    parser.add_argument("--spatial-size", nargs=2, type=int, default=None, help="the AP grid (default: the bundle's)")
    parser.add_argument(
        "-o",
        "--override",
        type=parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an AP bundle override (repeatable), e.g. -o val_interval=1; the table then measures a variant, not the "
        "shipped defaults",
    )
    parser.add_argument("--baseline-python", type=Path, default=REPO / ".venv-smp" / "bin" / "python")
    parser.add_argument("--parts", nargs="+", default=["ap", "baseline", "mri"], choices=["ap", "baseline", "mri"])
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if args.spatial_size is None:
        shipped = json.loads((REPO / "bundles" / AP_BUNDLE / "configs" / "train.json").read_text())["spatial_size"]
        args.spatial_size = dict(args.override).get("spatial_size", shipped)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.update(
        date=date.today().isoformat(),
        machine=f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.processor()}",
        ap_overrides=dict(args.override),
    )
    if {"ap", "baseline"} & set(args.parts) and args.aasce is None:
        parser.error("--aasce is needed for the ap and baseline parts")
    if "mri" in args.parts and args.mri is None:
        parser.error("--mri is needed for the mri part")

    def save() -> None:
        # After every part, so that a later part's failure keeps what the earlier ones measured.
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")

    if {"ap", "baseline"} & set(args.parts):
        roots = _aasce_data(args.aasce, args.out / "data")
        truth = json.loads((roots["test"] / "landmarks.json").read_text())
        results["floor"] = {
            "corners": cobb_from_corners(truth),
            "masks": score_cobb(roots["test"], truth, args.out / "floor" / "measure.csv"),
        }
        save()
        if "ap" in args.parts:
            _ap(args, roots, results)
            save()
        if "baseline" in args.parts:
            _baseline(args, roots, results)
            save()
    if "mri" in args.parts:
        _mri(args, results)
        save()
    print("\n" + _table(results))
    print(f"\nwritten: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
