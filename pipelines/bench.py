"""Throughput benchmark: the bundles' real trainers against the bare training loop, in one process.

    python -m pipelines.bench [--out bench_output/throughput] [--iterations 20] [--rounds 3]

For the X-ray (AP) and MRI bundles it builds the trainer from the bundle's own ``train.json`` (with the same
data pipeline, loss, optimizer and AMP setting) and reports:

- trainer rate: images/s of ``SupervisedTrainer`` over a fixed number of iterations after warm-up;
- bare rate: images/s of a plain forward + backward + step loop of the same network, loss and optimizer on one
  batch already in memory: the limit the trainer can approach;
- the ratio trainer / bare (trainer, bare and engine are measured in ``--rounds`` interleaved rounds; the
  medians are reported, the ratio as the median of each round's ratio, with its range);
- engine rate: images/s of the same trainer fed one in-memory batch over and over, which splits the gap between
  trainer and bare into the engine's own work (engine / bare: handlers, metrics, and the spatial augmentation its
  ``prepare_batch`` applies on the training device) and the DataLoader's share of the CPU (trainer / engine);
- loader rate: images/s of the training DataLoader alone (cached preprocessing, the augmentation it runs);
- inference latency per X-ray film and per MRI volume, through ``inference.json`` (Invertd, writing outputs);
- peak RSS of the process.

The table is printed and written to ``bench.json``. "Images" are training samples: films for X-ray, 2D slices
for MRI.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import resource
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

from pipelines.common import BUNDLES, REPO, generated_once
from spine_monai.data import build_mri_datalist, build_xray_datalist, write_datalist
from spine_monai.data.synth_mri import write_mri_dataset
from spine_monai.data.synth_xray import write_xray_dataset

WARMUP = 3
SEED = 99


def _parser(bundle: str, config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / config))
    parser.update(overrides)
    return parser


def _images(batch) -> int:
    # An engine with decollate=True (MONAI's default) leaves a list of samples in its state; False leaves the batch.
    return len(batch) if isinstance(batch, list) else int(batch["image"].shape[0])


def trainer_rate(parser: ConfigParser, iterations: int, data: list | None = None) -> float:
    """Images/s of the bundle's trainer over ``iterations`` iterations after ``WARMUP``.

    ``data``, when given, replaces the trainer's data loader.
    """
    parser.update({"train#trainer#epoch_length": iterations + WARMUP, "train#trainer#max_epochs": 1})
    trainer = parser.get_parsed_content("train#trainer")
    if data is not None:
        trainer.data_loader = data
    stamps: list[tuple[float, int]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: stamps.append((time.perf_counter(), _images(e.state.batch)))
    )
    trainer.run()
    (t0, _), *rest = stamps[WARMUP - 1 :]
    return sum(n for _, n in rest) / (rest[-1][0] - t0)


def _one_batch_parser(parser: ConfigParser) -> ConfigParser:
    """A copy of ``parser`` whose training set is one batch of records: caching the whole set takes a minute, and
    the bare and engine loops only need one batch."""
    subset = ConfigParser(copy.deepcopy(parser.config))
    subset["train#dataset#data"] = "$@train#records[:@batch_size]"
    return subset


def engine_rate(parser: ConfigParser, iterations: int) -> float:
    """Images/s of the bundle's trainer fed one collated batch ``iterations + WARMUP`` times: no data work."""
    parser = _one_batch_parser(parser)
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    return trainer_rate(parser, iterations, data=[batch] * (iterations + WARMUP))


def bare_rate(parser: ConfigParser, iterations: int) -> float:
    """Images/s of forward + backward + step on one in-memory batch, with the trainer's own objects."""
    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("network")
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    amp = bool(parser.get_parsed_content("amp"))
    batch = next(iter(_one_batch_parser(parser).get_parsed_content("train#dataloader")))
    image, label = batch["image"].to(device), batch["label"].to(device)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    network.train()
    for i in range(iterations + WARMUP):
        if i == WARMUP:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = loss_fn(network(image), label)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iterations * image.shape[0] / (time.perf_counter() - start)


def loader_rate(parser: ConfigParser, iterations: int) -> float:
    """Images/s of the training DataLoader alone (cache filled, augmentation running), after ``WARMUP`` batches."""
    loader = parser.get_parsed_content("train#dataloader")
    stamps: list[tuple[float, int]] = []
    while len(stamps) < iterations + WARMUP:
        for batch in loader:
            stamps.append((time.perf_counter(), _images(batch)))
            if len(stamps) >= iterations + WARMUP:
                break
    (t0, _), *rest = stamps[WARMUP - 1 :]
    return sum(n for _, n in rest) / (rest[-1][0] - t0)


def inference_latency(bundle: str, overrides: dict, network_state: dict, out: Path) -> float:
    """Seconds per input (film or volume) through ``inference.json``, after the first input."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "random_weights.pt"
    torch.save(network_state, ckpt)
    parser = _parser(bundle, "inference.json", {**overrides, "ckpt_path": str(ckpt), "output_dir": str(out)})
    evaluator = parser.get_parsed_content("evaluator")
    stamps: list[float] = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps.append(time.perf_counter()))
    evaluator.run()
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def _measure(
    name: str, bundle: str, overrides: dict, infer_overrides: dict, iterations: int, rounds: int, out: Path
) -> dict:
    """One table row. Trainer, bare and engine rates are taken in ``rounds`` interleaved rounds and the medians
    reported, with the ratio as the median of each round's trainer / bare: on a shared machine the speed of the
    same loop drifts by 10-20 % within minutes, and neighbouring measurements drift together."""
    samples: dict[str, list[float]] = {"trainer": [], "bare": [], "engine": []}
    measures = {"trainer": trainer_rate, "bare": bare_rate, "engine": engine_rate}
    for _ in range(rounds):
        for key, measure in measures.items():
            samples[key].append(measure(_parser(bundle, "train.json", overrides), iterations))
            # Engines, handlers and loaders can sit in reference cycles: collect them so that each run's cache is
            # freed before the next one is built, and the peak RSS is that of one run rather than of all of them.
            gc.collect()
    ratios = [t / b for t, b in zip(samples["trainer"], samples["bare"], strict=True)]
    parser = _parser(bundle, "train.json", overrides)
    row = {"bundle": bundle, "device": str(parser.get_parsed_content("device")), "rounds": rounds}
    row["epoch_batches"] = math.ceil(
        len(parser.get_parsed_content("train#records")) / parser.get_parsed_content("batch_size")
    )
    if row["epoch_batches"] < iterations + WARMUP:
        print(
            f"{name}: an epoch is {row['epoch_batches']} batches, fewer than the {iterations + WARMUP} measured: the "
            "trainer rate includes the DataLoader's restarts (use more cases for a representative figure)",
            flush=True,
        )
    for key, values in samples.items():
        row[f"{key}_images_per_s"] = statistics.median(values)
        row[f"{key}_rounds"] = values
    row["ratio"] = statistics.median(ratios)
    row["ratio_rounds"] = ratios
    row["loader_images_per_s"] = loader_rate(parser, iterations)
    state = parser.get_parsed_content("network_def").state_dict()
    row["inference_s_per_input"] = inference_latency(bundle, infer_overrides, state, out / f"{name}_inference")
    print(
        f"{name:6s} trainer {row['trainer_images_per_s']:7.1f}/s  bare {row['bare_images_per_s']:7.1f}/s  "
        f"ratio {row['ratio']:.2f} ({min(ratios):.2f}-{max(ratios):.2f})  "
        f"engine {row['engine_images_per_s']:7.1f}/s  loader {row['loader_images_per_s']:7.1f}/s  "
        f"inference {row['inference_s_per_input']:.3f} s/input",
        flush=True,
    )
    return row


def _synthetic(out: Path, name: str, cases: int, write, build) -> Path:
    """The synthetic set ``out/name`` and its datalist, generated once; another size needs another ``--out``."""

    def generate(root: Path) -> None:
        write(root, cases, seed=SEED)
        write_datalist(out / f"{name}_datalist.json", build(root, folds=5, seed=SEED))

    return generated_once(out / name, {"cases": cases, "seed": SEED}, generate)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "throughput")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of trainer, bare and engine")
    # Enough for the measured iterations to fit in one epoch at the default 20: a DataLoader restarting every few
    # batches (as with a handful of cases) stalls the trainer at each restart, which a real data set does not.
    parser.add_argument("--xray-cases", type=int, default=240, help="synthetic X-ray patients (default 240)")
    parser.add_argument("--mri-cases", type=int, default=60, help="synthetic MRI volumes (default 60)")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.rounds < 1:
        parser.error("--iterations and --rounds must be at least 1")
    out = args.out.resolve()
    xray = _synthetic(out, "xray", args.xray_cases, write_xray_dataset, build_xray_datalist)
    mri = _synthetic(out, "mri", args.mri_cases, write_mri_dataset, build_mri_datalist)
    common = {"progress_bar": False, "val_interval": 10**6}
    cases = {"xray_ap": ("xray", "spine_xray_ap_seg", xray), "mri": ("mri", "spine_mri_seg", mri)}
    rows = {}
    for key, (name, bundle, root) in cases.items():
        data = {"dataset_dir": str(root), "datalist": str(out / f"{name}_datalist.json")}
        train = {**common, **data, "output_dir": str(out / f"{name}_run")}
        rows[key] = _measure(name, bundle, train, {**data, "infer_split": "all"}, args.iterations, args.rounds, out)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}",
        "iterations": args.iterations,
        "rounds": args.rounds,
        "peak_rss_mb": peak_mb,
        "results": rows,
    }
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    print(f"peak RSS {peak_mb:.0f} MB; written {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
