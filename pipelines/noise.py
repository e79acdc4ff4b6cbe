"""Noise robustness: train on clean and on noisy images, evaluate each model on clean and on noisy test images.

    python -m pipelines.noise [--sigma 5000] [--bit-depth 16] [--bundle spine_xray_ap_seg] [--fold 0]
                              [--epochs 10] [--full] [--dataset-dir DIR [--datalist FILE]] [--out DIR] [--resume]

The noise is Gaussian with a standard deviation given on the scale of the image's bit depth:
``noise_std = sigma / (2**bit_depth - 1)``, so the default ``--sigma 5000 --bit-depth 16`` (the DTU setting) is
7.6 % of full scale. The bundles add it after scaling each image's 0.5-99.5 percentiles to [0, 1], so it is
relative to that range rather than to the raw 16-bit values; the two agree for an image that spans its full range.

Two runs: ``train_clean`` (``noise_std=0``) and ``train_noisy`` (``noise_std`` on every training image), both
validating on fold ``--fold``. Each model is evaluated on the testing list twice, clean (``eval_clean/``) and
with the same noise added (``eval_noisy/``, fixed seed, so both models see the same noisy images). Outputs:
``table_2x2.csv`` (rows: training, columns: evaluation, cells: mean Dice over structures; MRI: over classes
without background), ``per_structure.csv``, ``summary.md`` and ``noise.png``.
"""

from __future__ import annotations

import pandas as pd

from pipelines.experiment import (
    ALL_BUNDLES,
    Experiment,
    experiment_parser,
    grouped_bars,
    pyplot,
    reports_bundle_failure,
    save_plot,
)
from spine_monai.data import select_records

CONDITIONS = ("clean", "noisy")


def noise_std(sigma: float, bit_depth: int) -> float:
    """``sigma`` in grey levels of a ``bit_depth``-bit image as a fraction of full scale."""
    return sigma / (2**bit_depth - 1)


@reports_bundle_failure
def main(argv: list[str] | None = None) -> int:
    """Run the noise experiment; returns the exit status."""
    parser = experiment_parser("noise", __doc__, ALL_BUNDLES)
    parser.add_argument("--sigma", type=float, default=5000.0, help="noise sd in grey levels (default 5000)")
    parser.add_argument("--bit-depth", type=int, default=16, help="bits of those grey levels (default 16)")
    parser.add_argument("--fold", type=int, default=0, help="the validation fold (default 0)")
    exp = Experiment("noise", parser, argv)
    std = noise_std(exp.args.sigma, exp.args.bit_depth)
    datalist = exp.prepare_data()
    if not datalist.get("testing"):
        raise SystemExit(f"error: {exp.datalist} has no testing list to evaluate on")
    n_train = len(select_records(datalist, "train", exp.args.fold))
    evaluations = {c: {"eval_split": "test", "noise_std": std if c == "noisy" else 0.0} for c in CONDITIONS}
    for c in CONDITIONS:
        exp.add_run(
            f"train_{c}",
            evaluations=evaluations,
            train_records=n_train,
            train={"fold": exp.args.fold, "noise_std": std if c == "noisy" else 0.0},
            info={"training": c},
        )
    records = exp.execute()

    key = exp.modality.key
    per_structure = exp.summaries(records).drop(columns="run")
    per_structure.to_csv(exp.folder / "per_structure.csv", index=False, float_format="%.5f")
    kept = per_structure[~per_structure[key].isin(exp.modality.not_in_mean)]
    table = kept.pivot_table(index="training", columns="evaluation", values="Dice", aggfunc="mean")
    table = table.reindex(index=list(CONDITIONS), columns=list(CONDITIONS))
    table.index = [f"train {c}" for c in table.index]
    table.columns = [f"eval {c}" for c in table.columns]
    table.index.name = "mean Dice"
    table.to_csv(exp.folder / "table_2x2.csv", float_format="%.5f")
    dice = per_structure.pivot_table(index=key, columns=["training", "evaluation"], values="Dice", sort=False)
    dice.columns = [f"train {t} / eval {e}" for t, e in dice.columns]
    plot = _plot(exp, dice)
    exp.report(
        f"Noise robustness of {exp.bundle}: sigma {exp.args.sigma:g} at {exp.args.bit_depth} bits "
        f"(noise_std {std:.4f})",
        {"mean Dice (2x2)": table.reset_index(), "Dice per structure": dice.reset_index()},
        [plot],
    )
    return 0


def _plot(exp: Experiment, dice: pd.DataFrame):
    fig, ax = pyplot().subplots(figsize=(max(5.0, 1.2 * len(dice)), 3.8))
    grouped_bars(ax, dice)
    return save_plot(exp, fig, ax, f"{exp.bundle}: noise sigma {exp.args.sigma:g} / {exp.args.bit_depth} bits")


if __name__ == "__main__":
    raise SystemExit(main())
