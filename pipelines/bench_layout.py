"""Channels first against channels last: the bare training step of each bundle's network, in interleaved pairs.

    python -m pipelines.bench_layout [--out bench_output/throughput] [--pairs 30] [--steps N]
                                     [--networks xray mri cls cls_vertebra] [--ap-variants attention_unet.json ...]

For each network of ``--networks`` (the AP X-ray and MRI segmentation bundles, the classification bundle's film
classifier and its vertebra-level classifier; and the AP bundle with each variant config given), the network, loss and
optimizer are built from the bundle's ``train.json`` twice, with ``channels_last`` false and true, and both get the same
training batch. Then ``--steps`` bare steps (forward, backward, optimizer step: :class:`pipelines.bench.BareLoop`) of
one layout and of the other are timed in turn, ``--pairs`` times, the layout that goes first alternating. Without
``--steps`` each network gets as many steps as take about a second (at least one), paced by one channels-first step
after the warm-up, so that a slow network does not stretch the run. A pair's speed-up is channels-first seconds over
channels-last seconds; the median over the pairs, their range and how many pairs channels last won are printed and
written to ``layout.json``. Measured seconds apart, both layouts see the same machine: the drift of a shared machine's
speed over minutes, which separates ``make bench`` rows, stays out of the comparison.

This is the measurement behind :func:`spine_monai.workflow.channels_last_by_default`. The sets are ``make bench``'s
(made in ``--out`` on first use); the classifiers train on its X-ray set, the vertebra-level one with the set's
reference masks.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import date
from pathlib import Path

import torch

from pipelines.bench import BareLoop, add_set_arguments, machine, one_batch_parser, synthetic_sets
from pipelines.common import BUNDLES, REPO, config_files
from spine_monai.workflow import keep_freed_memory, read_bundle_config

LAYOUTS = {"channels_first": False, "channels_last": True}
WARMUP_STEPS = 2
# Seconds of one layout's block of steps when --steps is not given.
BLOCK_SECONDS = 1.0
# Network name -> (the make bench set it trains on, bundle, overrides); the vertebra-level classifier cuts its
# patches around the set's reference masks (mask_dir, set in main).
NETWORKS = {
    "xray": ("xray", "spine_xray_ap_seg", {}),
    "mri": ("mri", "spine_mri_seg", {}),
    "cls": ("xray", "spine_xray_cls", {}),
    "cls_vertebra": ("xray", "spine_xray_cls", {"vertebra_level": True}),
}


def layout_speedup(configs: list[str], overrides: dict, pairs: int, steps: int | None = None) -> dict:
    """Channels last against channels first on one batch of a bundle's training, in interleaved pairs.

    Args:
        configs: the bundle's ``train.json`` and any variant merged on top.
        overrides: the network's, data and output overrides (``dataset_dir``, ``datalist``, ``output_dir``).
        pairs: timed pairs.
        steps: bare steps per layout in each pair; ``None`` for as many as take about ``BLOCK_SECONDS`` (at least
            one), from the pace of one channels-first step after the warm-up.

    Returns:
        ``speedup`` (the median pair's channels-first / channels-last seconds), ``speedup_range``, ``speedups``,
        ``channels_last_faster`` (pairs won), ``pairs``, ``steps``, ``batch`` (images per step) and
        ``channels_first_step_s`` (the median pair's seconds per channels-first step).
    """
    loops: dict[str, BareLoop] = {}
    batch = None
    for name, channels_last in LAYOUTS.items():
        parser = read_bundle_config(configs)
        parser.update({**overrides, "progress_bar": False, "channels_last": channels_last})
        trainer = one_batch_parser(parser).get_parsed_content("train#trainer")
        if batch is None:
            batch = next(iter(trainer.data_loader))
        device = torch.device(trainer.state.device)
        loops[name] = BareLoop(
            trainer.network, trainer.loss_function, trainer.optimizer, trainer.amp, batch, device, trainer.to_kwargs
        )
        loops[name].run(WARMUP_STEPS)
    if steps is None:
        # Paced after the warm-up, whose first step also pays for one-time setup.
        steps = max(1, round(BLOCK_SECONDS / loops["channels_first"].run(1)))
    seconds: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for i in range(pairs):
        for name in list(LAYOUTS) if i % 2 == 0 else reversed(list(LAYOUTS)):
            seconds[name].append(loops[name].run(steps))
    ratios = [f / c for f, c in zip(seconds["channels_first"], seconds["channels_last"], strict=True)]
    return {
        "speedup": statistics.median(ratios),
        "speedup_range": [min(ratios), max(ratios)],
        "speedups": ratios,
        "channels_last_faster": sum(r > 1 for r in ratios),
        "pairs": pairs,
        "steps": steps,
        "batch": loops["channels_first"].images,
        "channels_first_step_s": statistics.median(seconds["channels_first"]) / steps,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "throughput")
    parser.add_argument("--pairs", type=int, default=30, help="timed pairs per network (default 30)")
    parser.add_argument(
        "--steps", type=int, default=None, help="bare steps per layout in a pair (default: about a second's worth)"
    )
    parser.add_argument(
        "--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS), help="networks to measure (all)"
    )
    parser.add_argument(
        "--ap-variants",
        nargs="*",
        default=[],
        metavar="CONFIG",
        help="AP variant configs to measure too, e.g. attention_unet.json segresnet.json",
    )
    add_set_arguments(parser)
    args = parser.parse_args(argv)
    if args.pairs < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--pairs and --steps must be at least 1")
    ap_configs = BUNDLES / "spine_xray_ap_seg" / "configs"
    missing = [v for v in args.ap_variants if not (ap_configs / v).is_file()]
    if missing:
        parser.error(f"no such AP variant config in {ap_configs}: {', '.join(missing)}")
    keep_freed_memory(True)
    out = args.out.resolve()
    sets = synthetic_sets(out, args.xray_cases, args.mri_cases)
    cases = [(name, *NETWORKS[name], []) for name in args.networks]
    cases += [(f"xray+{Path(v).stem}", *NETWORKS["xray"], [v]) for v in args.ap_variants]
    rows = {}
    for name, data, bundle, network_overrides, variant in cases:
        root = sets[data][1]
        overrides = {
            **network_overrides,
            "dataset_dir": str(root),
            "datalist": str(out / f"{data}_datalist.json"),
            "output_dir": str(out / f"{name}_layout"),
        }
        if network_overrides.get("vertebra_level"):
            overrides["mask_dir"] = str(root)
        row = layout_speedup(config_files(bundle, "train.json", *variant), overrides, args.pairs, args.steps)
        rows[name] = {"bundle": bundle, "variant": variant[0] if variant else None, **row}
        low, high = row["speedup_range"]
        print(
            f"{name:34s} channels last x{row['speedup']:.3f} ({low:.2f}-{high:.2f}), faster in "
            f"{row['channels_last_faster']}/{row['pairs']} pairs of {row['steps']} step(s); channels first "
            f"{row['channels_first_step_s']:.3f} s per step of {row['batch']}",
            flush=True,
        )
    result = {"date": date.today().isoformat(), "machine": machine(), "results": rows}
    (out / "layout.json").write_text(json.dumps(result, indent=1))
    print(f"written {out / 'layout.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
