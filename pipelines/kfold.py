"""k-fold cross-validation of a segmentation bundle: for every fold k, train with fold k held out, evaluate on it.

    python -m pipelines.kfold [--bundle spine_xray_ap_seg|spine_xray_lat_seg|spine_mri_seg] [--folds 3]
                              [--epochs 10] [--full] [--dataset-dir DIR [--datalist FILE]] [--out DIR] [--resume]

Each fold k is one run (``fold<k>/``): the bundle's train.json with ``fold=k`` (fold k validates and picks
``model.pt``, the other folds train), then evaluate.json with ``eval_split=validation fold=k``. The per-fold
summaries are written to ``per_fold.csv``; ``summary.csv`` and ``summary.md`` give the mean and sd over folds
(sd with n - 1) per structure (MRI: per class) and of the mean Dice (MRI: without background); ``kfold.png``
plots them. Without ``--dataset-dir`` a synthetic set is written first, all of it in the folds (X-ray: 24 patients
in 3 folds, 160 in 5 with ``--full``; MRI: 12 volumes in 3 folds, 30 in 5); with a datalist, every fold it holds
is run.
"""

from __future__ import annotations

import pandas as pd

from pipelines.experiment import (
    ALL_BUNDLES,
    Experiment,
    experiment_parser,
    mean_sd_table,
    pyplot,
    reports_bundle_failure,
    save_plot,
)
from spine_monai.data import select_records


@reports_bundle_failure
def main(argv: list[str] | None = None) -> int:
    """Run the k-fold experiment; returns the exit status."""
    parser = experiment_parser("kfold", __doc__, ALL_BUNDLES)
    parser.add_argument(
        "--folds", type=int, default=None, help="folds of the synthetic datalist (default 3, or 5 with --full)"
    )
    # No testing list is needed: every patient validates once.
    exp = Experiment("kfold", parser, argv, small={"folds": 3, "test_fraction": 0.0}, full={"test_fraction": 0.0})
    datalist = exp.prepare_data(folds=exp.args.folds)
    folds = sorted({int(r["fold"]) for r in datalist["training"]})
    if len(folds) < 2:
        raise SystemExit(f"error: {exp.datalist} holds {len(folds)} fold(s); cross-validation needs at least 2")
    for k in folds:
        exp.add_run(
            f"fold{k}",
            evaluations={"validation": {"eval_split": "validation", "fold": k}},
            train_records=len(select_records(datalist, "train", k)),
            train={"fold": k},
            info={"fold": k},
        )
    records = exp.execute()

    key, metrics = exp.modality.key, list(exp.modality.metrics)
    per_fold = exp.summaries(records).drop(columns=["run", "evaluation"])
    per_fold.to_csv(exp.folder / "per_fold.csv", index=False, float_format="%.5f")
    # The mean over structures within each fold first, so its sd is over folds like the others'.
    kept = per_fold[~per_fold[key].isin(exp.modality.not_in_mean)]
    means = kept.groupby("fold", as_index=False)[metrics].mean().assign(**{key: _mean_label(exp)})
    rows = pd.concat([per_fold, means], ignore_index=True)
    g = rows.groupby(key, sort=False)[metrics]
    summary = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_sd"))
    summary.insert(0, "folds", g.size())
    summary = summary.reset_index()
    summary.to_csv(exp.folder / "summary.csv", index=False, float_format="%.5f")
    table = mean_sd_table(rows, [key], metrics).rename(columns={"n": "folds"})
    plot = _plot(exp, summary)
    exp.report(f"{len(folds)}-fold cross-validation of {exp.bundle}", {"mean ± sd over folds": table}, [plot])
    return 0


def _mean_label(exp: Experiment) -> str:
    return "mean (no background)" if exp.modality.not_in_mean else "mean"


def _plot(exp: Experiment, summary: pd.DataFrame):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(summary)), 3.5))
    ax.bar(summary[exp.modality.key], summary["Dice_mean"], yerr=summary["Dice_sd"].fillna(0), capsize=3)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    title = f"{exp.bundle}: {summary['folds'].iloc[0]}-fold cross-validation"
    return save_plot(exp, fig, ax, title, ylabel="Dice (mean ± sd over folds)")


if __name__ == "__main__":
    raise SystemExit(main())
