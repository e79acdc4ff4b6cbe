"""Architecture comparison: the bundle's network variants trained on the same data with the same budget.

    python -m pipelines.architectures [--architectures unet attention_unet dynunet_ds segresnet]
                                      [--bundle spine_xray_ap_seg] [--fold 0] [--epochs 4] [--full]
                                      [--dataset-dir DIR [--datalist FILE]] [--out DIR] [--resume]

One run per architecture, each the bundle's train.json and evaluate.json with the variant config merged on
top (``unet`` is the bundle's own network): ``attention_unet.json`` (AttentionUnet), ``dynunet_deep_supervision.json``
(DynUNet whose two deeper decoder outputs are supervised too) and ``segresnet.json`` (SegResNet). The X-ray bundles
have all four; the MRI bundle has ``unet`` and ``attention_unet``. All train with the same epochs, batch size,
learning rate, seed and validation fold, and are evaluated on the testing list.

The table (``summary.csv``, ``summary.md``) gives per architecture: the parameter count (``network_def``
instantiated through ``monai.bundle.ConfigParser`` with the variant merged and the overrides applied), the
training throughput in images per second, the training wall time, and the Dice per structure (MRI: per class)
and their mean. Throughput is read from the training log: training images per epoch x epochs divided by the sum
of ignite's per-epoch times ("Epoch[N] Complete. Time taken") less the validation runs inside them, so process
start, data caching and validation are left out (checkpoint writing is in). ``per_structure.csv`` holds every
metric; ``architectures.png`` plots the Dice.
"""

from __future__ import annotations

import pandas as pd

from pipelines.common import BUNDLES
from pipelines.experiment import (
    ALL_BUNDLES,
    Experiment,
    count_parameters,
    experiment_parser,
    grouped_bars,
    pyplot,
    reports_bundle_failure,
    save_plot,
)
from spine_monai.data import select_records

# name -> (variant config merged on train.json and evaluate.json, or None for the bundle's own network; label)
ARCHITECTURES = {
    "unet": (None, "UNet"),
    "attention_unet": ("attention_unet.json", "AttentionUnet"),
    "dynunet_ds": ("dynunet_deep_supervision.json", "DynUNet (deep supervision)"),
    "segresnet": ("segresnet.json", "SegResNet"),
}


# Four networks, three with 2-3x the UNet's parameters and time: 4 epochs (validated at 2 and 4) keep the small
# setting within minutes on a CPU; --full trains each for 100.
SMALL_EPOCHS = 4


def available(bundle: str) -> list[str]:
    """The architectures whose variant config the bundle has."""
    configs = BUNDLES / bundle / "configs"
    return [name for name, (variant, _) in ARCHITECTURES.items() if variant is None or (configs / variant).is_file()]


@reports_bundle_failure
def main(argv: list[str] | None = None) -> int:
    """Run the architecture comparison; returns the exit status."""
    parser = experiment_parser("architectures", __doc__, ALL_BUNDLES, small_epochs=SMALL_EPOCHS)
    parser.add_argument(
        "--architectures",
        nargs="+",
        choices=list(ARCHITECTURES),
        default=None,
        help="which to compare (default: all the bundle has)",
    )
    parser.add_argument("--fold", type=int, default=0, help="the validation fold (default 0)")
    exp = Experiment("architectures", parser, argv, small={"epochs": SMALL_EPOCHS})
    names = exp.args.architectures or available(exp.bundle)
    missing = [n for n in names if n not in available(exp.bundle)]
    if missing:
        raise SystemExit(f"error: {exp.bundle} has no variant config for {', '.join(missing)}")
    datalist = exp.prepare_data()
    if not datalist.get("testing"):
        raise SystemExit(f"error: {exp.datalist} has no testing list to evaluate on")
    n_train = len(select_records(datalist, "train", exp.args.fold))
    for name in names:
        exp.add_run(
            name,
            evaluations={"test": {"eval_split": "test"}},
            train_records=n_train,
            train={"fold": exp.args.fold},
            variant=ARCHITECTURES[name][0],
            info={"architecture": name},
        )
    records = exp.execute()

    key = exp.modality.key
    per_structure = exp.summaries(records).drop(columns=["run", "evaluation"])
    per_structure.to_csv(exp.folder / "per_structure.csv", index=False, float_format="%.5f")
    dice = per_structure.pivot(index="architecture", columns=key, values="Dice")
    kept = [c for c in per_structure[key].unique() if c not in exp.modality.not_in_mean]
    rows = []
    for rec in records:
        name = rec["architecture"]
        train = rec["train"]
        rows.append(
            {
                "architecture": ARCHITECTURES[name][1],
                "parameters": count_parameters(exp.bundle, ARCHITECTURES[name][0], exp.overrides),
                "train_images_per_s": train["train_images_per_s"],
                "train_min": train["seconds"] / 60,
                **{c: dice.loc[name, c] for c in per_structure[key].unique()},
                "mean Dice": dice.loc[name, kept].mean(),
            }
        )
    summary = pd.DataFrame(rows)
    summary.to_csv(exp.folder / "summary.csv", index=False, float_format="%.5f")
    plot = _plot(exp, summary, list(per_structure[key].unique()))
    exp.report(
        f"Architectures of {exp.bundle}: {exp.epochs} epochs each",
        {"Dice on the testing list, parameters and training throughput": summary},
        [plot],
    )
    return 0


def _plot(exp: Experiment, summary: pd.DataFrame, structures: list[str]):
    fig, ax = pyplot().subplots(figsize=(max(5.0, 1.2 * len(structures)), 3.8))
    grouped_bars(ax, summary.set_index("architecture")[structures].T)
    return save_plot(exp, fig, ax, f"{exp.bundle}: {exp.epochs} epochs")


if __name__ == "__main__":
    raise SystemExit(main())
