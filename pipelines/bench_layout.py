"""Channels first against channels last: the bare training step of each bundle's network, in interleaved pairs.

    python -m pipelines.bench_layout [--out bench_output/throughput] [--pairs 30] [--steps 5]
                                     [--ap-variants attention_unet.json ...]

For the AP X-ray and MRI bundles (and the AP bundle with each variant config given), the network, loss and optimizer
are built from ``train.json`` twice, with ``channels_last`` false and true, and both get the same training batch.
Then ``--steps`` bare steps (forward, backward, optimizer step: :class:`pipelines.bench.BareLoop`) of one layout and
of the other are timed in turn, ``--pairs`` times, the layout that goes first alternating. A pair's speed-up is
channels-first seconds over channels-last seconds; the median over the pairs, their range and how many pairs channels
last won are printed and written to ``layout.json``. Measured seconds apart, both layouts see the same machine: the
drift of a shared machine's speed over minutes, which separates ``make bench`` rows, stays out of the comparison.

This is the measurement behind :func:`spine_monai.runtime.channels_last_by_default`. The sets are ``make bench``'s
(made in ``--out`` on first use).
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import date
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from pipelines.bench import BareLoop, add_set_arguments, machine, one_batch_parser, synthetic_sets
from pipelines.common import BUNDLES, REPO, config_files
from spine_monai.runtime import keep_freed_memory

LAYOUTS = {"channels_first": False, "channels_last": True}
WARMUP_STEPS = 2


def layout_speedup(configs: list[str], overrides: dict, pairs: int, steps: int) -> dict:
    """Channels last against channels first on one batch of a bundle's training, in interleaved pairs.

    Args:
        configs: the bundle's ``train.json`` and any variant merged on top.
        overrides: data and output overrides (``dataset_dir``, ``datalist``, ``output_dir``).
        pairs: timed pairs.
        steps: bare steps per layout in each pair.

    Returns:
        ``speedup`` (the median pair's channels-first / channels-last seconds), ``speedup_range``, ``speedups``,
        ``channels_last_faster`` (pairs won), ``pairs``, ``steps``, ``batch`` (images per step) and
        ``channels_first_step_s`` (the median pair's seconds per channels-first step).
    """
    loops: dict[str, BareLoop] = {}
    batch = None
    for name, channels_last in LAYOUTS.items():
        parser = ConfigParser()
        parser.read_config(configs)
        parser.update({**overrides, "progress_bar": False, "channels_last": channels_last})
        trainer = one_batch_parser(parser).get_parsed_content("train#trainer")
        if batch is None:
            batch = next(iter(trainer.data_loader))
        device = torch.device(trainer.state.device)
        loops[name] = BareLoop(
            trainer.network, trainer.loss_function, trainer.optimizer, trainer.amp, batch, device, trainer.to_kwargs
        )
        loops[name].run(WARMUP_STEPS)
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
    parser.add_argument("--steps", type=int, default=5, help="bare steps per layout in a pair (default 5)")
    parser.add_argument(
        "--ap-variants",
        nargs="*",
        default=[],
        metavar="CONFIG",
        help="AP variant configs to measure too, e.g. attention_unet.json segresnet.json",
    )
    add_set_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.pairs, args.steps) < 1:
        parser.error("--pairs and --steps must be at least 1")
    ap_configs = BUNDLES / "spine_xray_ap_seg" / "configs"
    missing = [v for v in args.ap_variants if not (ap_configs / v).is_file()]
    if missing:
        parser.error(f"no such AP variant config in {ap_configs}: {', '.join(missing)}")
    keep_freed_memory(True)
    out = args.out.resolve()
    sets = synthetic_sets(out, args.xray_cases, args.mri_cases)
    cases = [("xray", "xray", []), ("mri", "mri", [])]
    cases += [(f"xray+{Path(v).stem}", "xray", [v]) for v in args.ap_variants]
    rows = {}
    for name, data, variant in cases:
        bundle, root = sets[data]
        overrides = {
            "dataset_dir": str(root),
            "datalist": str(out / f"{data}_datalist.json"),
            "output_dir": str(out / f"{data}_layout"),
        }
        row = layout_speedup(config_files(bundle, "train.json", *variant), overrides, args.pairs, args.steps)
        rows[name] = {"bundle": bundle, "variant": variant[0] if variant else None, **row}
        low, high = row["speedup_range"]
        print(
            f"{name:34s} channels last x{row['speedup']:.3f} ({low:.2f}-{high:.2f}), faster in "
            f"{row['channels_last_faster']}/{row['pairs']} pairs; channels first "
            f"{row['channels_first_step_s']:.3f} s per step of {row['batch']}",
            flush=True,
        )
    result = {"date": date.today().isoformat(), "machine": machine(), "results": rows}
    (out / "layout.json").write_text(json.dumps(result, indent=1))
    print(f"written {out / 'layout.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
