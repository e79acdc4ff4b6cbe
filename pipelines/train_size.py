"""Learning curves: Dice against the number of training patients, on a fixed validation fold and testing list.

    python -m pipelines.train_size [--sizes 4 8 16] [--repeats 2] [--budget epochs|images] [--fold 0]
                                   [--bundle spine_xray_ap_seg] [--epochs 10] [--full]
                                   [--dataset-dir DIR [--datalist FILE]] [--out DIR] [--resume]

For each repeat r and size n, run ``n<n>_r<r>/`` trains on n records drawn from the training pool (the
datalist's training records outside fold ``--fold``) and is evaluated on the testing list. Each run gets its own
``datalist.json``: the drawn records, the unchanged validation fold (which picks ``model.pt``) and the unchanged
testing list. Within a repeat the subsets are nested (the first n of one shuffle with seed ``--seed + r``, which
is also the training seed), so a larger set only adds patients.

``--budget epochs`` (default) trains every run for ``--epochs`` epochs, so a smaller set also gets fewer
iterations; ``--budget images`` trains each run for ``ceil(epochs * max(sizes) / n)`` epochs, the same number of
training images as the largest size (and validates as often), so only the variety of the data differs.

Outputs: ``runs.csv`` (one row per run and structure, plus the run's mean Dice as structure ``mean``),
``summary.csv`` (per size and structure: runs, mean and sd of Dice over repeats), ``summary.md`` and
``train_size.png`` (Dice against size, mean ± sd error bars). Defaults: sizes 4 8 16 with 2 repeats on 32
synthetic patients; with ``--full`` 10 25 50 100 with 3 repeats on 160.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipelines.experiment import (
    ALL_BUNDLES,
    Experiment,
    experiment_parser,
    mean_sd_text,
    pyplot,
    reports_bundle_failure,
    save_plot,
)
from spine_monai.data import select_records, write_datalist

DEFAULTS = {"small": {"sizes": [4, 8, 16], "repeats": 2}, "full": {"sizes": [10, 25, 50, 100], "repeats": 3}}


def subsample(datalist: dict, size: int, fold: int, seed: int) -> dict:
    """A datalist with ``size`` of the training records outside ``fold``; validation fold and testing kept.

    Args:
        datalist: the full datalist.
        size: training records to keep.
        fold: the validation fold, kept whole.
        seed: the shuffle's seed; for one seed, a larger ``size`` keeps a superset.

    Returns:
        the new datalist document, with a ``subsample`` entry saying how it was made.

    Raises:
        ValueError: when the pool is smaller than ``size``.
    """
    pool = select_records(datalist, "train", fold)
    if not 1 <= size <= len(pool):
        raise ValueError(f"training-set size {size} is not between 1 and the {len(pool)} records outside fold {fold}")
    order = np.random.default_rng(seed).permutation(len(pool))
    chosen = [pool[i] for i in sorted(order[:size])]
    return {
        **{k: v for k, v in datalist.items() if k not in ("training", "testing")},
        "training": chosen + select_records(datalist, "validation", fold),
        "testing": list(datalist.get("testing") or []),
        "subsample": {"size": size, "pool": len(pool), "validation_fold": fold, "seed": seed},
    }


@reports_bundle_failure
def main(argv: list[str] | None = None) -> int:
    """Run the training-set size experiment; returns the exit status."""
    parser = experiment_parser("train_size", __doc__, ALL_BUNDLES)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="training-set sizes (default 4 8 16)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats over seeds (default 2)")
    parser.add_argument("--budget", choices=["epochs", "images"], default="epochs", help="see above (default epochs)")
    parser.add_argument("--fold", type=int, default=0, help="the fixed validation fold (default 0)")
    # 32 patients: 8 testing, 24 in 4 folds, so fold 0 validates on 6 and the pool holds 18 >= the largest size.
    exp = Experiment("train_size", parser, argv, small={"cases": 32})
    level = "full" if exp.args.full else "small"
    sizes = sorted(set(exp.args.sizes or DEFAULTS[level]["sizes"]))
    repeats = exp.args.repeats or DEFAULTS[level]["repeats"]
    datalist = exp.prepare_data()
    if not datalist.get("testing"):
        raise SystemExit(f"error: {exp.datalist} has no testing list to evaluate on")
    val_interval = int(exp.setting("val_interval"))
    for r in range(repeats):
        seed = exp.args.seed + r
        for size in sizes:
            name = f"n{size:03d}_r{r}"
            try:
                sub = subsample(datalist, size, exp.args.fold, seed)
            except ValueError as e:
                raise SystemExit(f"error: {e}") from e
            sub_path = exp.folder / name / "datalist.json"
            write_datalist(sub_path, sub)
            factor = math.ceil(exp.epochs * max(sizes) / size) / exp.epochs if exp.args.budget == "images" else 1
            exp.add_run(
                name,
                evaluations={"test": {"eval_split": "test"}},
                train_records=size,
                train={"fold": exp.args.fold, "seed": seed, "val_interval": max(1, round(val_interval * factor))},
                epochs=round(exp.epochs * factor),
                datalist=sub_path,
                info={"size": size, "repeat": r, "seed": seed},
            )
    records = exp.execute()

    key = exp.modality.key
    per_run = exp.summaries(records).drop(columns="evaluation")
    epochs = {rec["name"]: rec["epochs"] for rec in records}
    per_run.insert(per_run.columns.get_loc("seed") + 1, "epochs", per_run["run"].map(epochs))
    kept = per_run[~per_run[key].isin(exp.modality.not_in_mean)]
    g = kept.groupby(["run", "size", "repeat", "seed", "epochs"], sort=False)
    means = g[list(exp.modality.metrics)].mean().join(g["cases"].max()).reset_index()
    per_run = pd.concat([per_run, means.assign(**{key: "mean"})], ignore_index=True)
    per_run = per_run.sort_values(["size", "repeat"], kind="stable")
    per_run.to_csv(exp.folder / "runs.csv", index=False, float_format="%.5f")
    g = per_run.groupby(["size", key], sort=False)["Dice"]
    summary = pd.DataFrame({"runs": g.size(), "Dice_mean": g.mean(), "Dice_sd": g.std(ddof=1)}).reset_index()
    summary.to_csv(exp.folder / "summary.csv", index=False, float_format="%.5f")
    text = summary.assign(Dice=mean_sd_text(summary["Dice_mean"], summary["Dice_sd"]))
    wide = text.pivot(index="size", columns=key, values="Dice")
    wide = wide[[*[c for c in summary[key].unique() if c != "mean"], "mean"]].reset_index()
    plot = _plot(exp, summary)
    exp.report(
        f"Training-set size of {exp.bundle}: {repeats} repeat(s), budget {exp.args.budget}",
        {"Dice on the testing list, mean ± sd over repeats": wide},
        [plot],
    )
    return 0


def _plot(exp: Experiment, summary: pd.DataFrame):
    plt = pyplot()
    key = exp.modality.key
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, rows in summary.groupby(key, sort=False):
        bold = name == "mean"
        ax.errorbar(
            rows["size"],
            rows["Dice_mean"],
            yerr=rows["Dice_sd"].fillna(0),
            marker="o",
            capsize=3,
            label=name,
            linewidth=2.5 if bold else 1.0,
            color="black" if bold else None,
        )
    ax.set_xlabel("training patients" if exp.modality.key == "structure" else "training volumes")
    ax.set_xticks(sorted(summary["size"].unique()))
    return save_plot(exp, fig, ax, f"{exp.bundle}: learning curve")


if __name__ == "__main__":
    raise SystemExit(main())
