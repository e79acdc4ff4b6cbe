"""Throughput benchmark: the bundles' real trainers against the bare training loop, in one process.

    python -m pipelines.bench [--out bench_output/throughput] [--iterations 20] [--rounds 3] [--block 5]
                              [--variants default channels_last ...] [--cache-workers N]

For the X-ray (AP) and MRI bundles it builds the trainer from the bundle's own ``train.json`` (with the same
data pipeline, loss, optimizer and AMP setting) and reports:

- trainer rate: images/s of ``SupervisedTrainer`` over a fixed number of iterations after warm-up;
- bare rate: images/s of a plain forward + backward + step loop of the same network, loss and optimizer on one
  batch already in memory: the limit the trainer can approach. It runs inside the trainer's run, ``--block``
  steps after every ``--block`` trainer iterations, its time taken out of the trainer's, so that both are
  measured on the machine as it is at that moment;
- the ratio trainer / bare (the median of ``--rounds`` rounds, with its range);
- engine rate: images/s of the same trainer fed one in-memory batch over and over, which splits the gap between
  trainer and bare into the engine's own work (engine / bare, paired with the bare loop the same way: handlers,
  metrics, and the augmentation its ``prepare_batch`` applies on the training device) and the DataLoader's share
  of the CPU;
- loader rate: images/s of the training DataLoader alone (cached preprocessing, the augmentation it runs);
- augment: milliseconds per batch of the trainer's ``prepare_batch`` alone (moving the batch to the training device
  and the batch augmentation there), the largest part of the engine's work besides the step;
- inference latency per X-ray film and per MRI volume, through ``inference.json`` (Invertd, writing outputs), and
  per AP film at the ELL888 films' size (1900x2900, ``--film-cases`` synthetic patients), where resizing the film
  and writing full-size masks and overlay cost most;
- peak RSS of the process.

Like the bundles' training, it first keeps memory freed by the C allocator for reuse
(:func:`spine_monai.workflow.keep_freed_memory`); ``--system-allocator`` leaves the allocator as it is, for comparison.

``--variants`` adds rows for the bundles' layout and cache options, each trained with its own overrides:
``channels_last`` (weights and training images in NHWC, the default on a CPU), ``channels_first`` (the default on a
GPU), ``cache_on_device`` (the cache held on the training device, the loader in the main process) and
``cache_on_device_thread`` (the same, batches fetched by MONAI's ``ThreadDataLoader``). On a GPU ``default``,
``channels_last`` and both cache rows are measured by default, on a CPU only ``default``. Inference is measured for
``default`` only: the options change training.

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
from spine_monai.synthetic.mri import write_mri_dataset
from spine_monai.synthetic.xray import parse_size, write_xray_dataset
from spine_monai.transforms import AugmentBatch
from spine_monai.workflow import keep_freed_memory, read_bundle_config

WARMUP = 3
SEED = 99
# The synthetic sets' sizes: 192 films and 48 volumes train, so that the measured iterations fit in one epoch.
XRAY_CASES, MRI_CASES = 240, 60
# Synthetic patients whose AP films are also inferred at the ELL888 films' size, (W, H).
FILM_CASES, FILM_SIZE = 4, (1900, 2900)
# Overrides of each benchmarked variant of the bundles' training.
VARIANTS = {
    "default": {},
    "channels_last": {"channels_last": True},
    "channels_first": {"channels_last": False},
    "cache_on_device": {"cache_on_device": True},
    "cache_on_device_thread": {"cache_on_device": True, "train#dataloader#_target_": "ThreadDataLoader"},
}
# Measured on a GPU unless --variants says otherwise; there the default is channels first.
GPU_VARIANTS = ["default", "channels_last", "cache_on_device", "cache_on_device_thread"]


def _parser(bundle: str, config: str, overrides: dict) -> ConfigParser:
    parser = read_bundle_config(str(BUNDLES / bundle / "configs" / config))
    parser.update(overrides)
    return parser


def _images(batch) -> int:
    # An engine with decollate=True (MONAI's default) leaves a list of samples in its state; False leaves the batch.
    return len(batch) if isinstance(batch, list) else int(batch["image"].shape[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BareLoop:
    """Forward + backward + step of a network, loss and optimizer on one batch already in memory: no data work,
    no engine. Given the trainer's own objects it runs between the trainer's iterations."""

    def __init__(
        self, network, loss_fn, optimizer, amp: bool, batch: dict, device: torch.device, to_kwargs: dict | None = None
    ) -> None:
        self.network, self.loss_fn, self.optimizer, self.amp, self.device = network, loss_fn, optimizer, amp, device
        # What the trainer's prepare_batch hands the network, without the augmentation: plain tensors (MetaTensors
        # cost each operation more), the trainer's memory format on the image alone.
        self.image, self.label = AugmentBatch(lambda moved: moved)(batch, device, **(to_kwargs or {}))
        self.scaler = torch.amp.GradScaler("cuda") if amp else None

    @property
    def images(self) -> int:
        return int(self.image.shape[0])

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps."""
        self.network.train()
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, enabled=self.amp):
                loss = self.loss_fn(self.network(self.image), self.label)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
        _sync(self.device)
        return time.perf_counter() - start


def one_batch_parser(parser: ConfigParser) -> ConfigParser:
    """A copy of ``parser`` whose training set is one batch of records: caching the whole set takes a minute, and
    the bare and engine loops only need one batch."""
    subset = ConfigParser(copy.deepcopy(parser.config))
    subset["train#dataset#data"] = "$@train#records[:@batch_size]"
    # One batch is not worth starting worker processes, which would also outlive it until collected.
    subset["train#dataloader#num_workers"] = 0
    subset["train#dataloader#persistent_workers"] = False
    return subset


def _one_batch(parser: ConfigParser) -> dict:
    return next(iter(one_batch_parser(parser).get_parsed_content("train#dataloader")))


def trainer_rate(
    parser: ConfigParser, iterations: int, data: list | None = None, bare_block: int = 0
) -> tuple[float, float | None]:
    """Images/s of the bundle's trainer over ``iterations`` iterations after ``WARMUP``, and of the bare loop.

    Args:
        parser: the bundle's training config.
        iterations: measured trainer iterations.
        data: when given, replaces the trainer's data loader.
        bare_block: when > 0, after every ``bare_block`` measured iterations the bare loop runs as many steps with
            the trainer's own network, loss and optimizer on one batch (the first of ``data`` when given), inside
            the run, and its time is taken out of the trainer's. The two rates are then measured seconds apart, so
            a drift of the machine's speed moves both alike. The trainer's DataLoader workers, a full queue ahead of
            it, wait meanwhile.

    Returns:
        (trainer images/s, bare images/s or None without ``bare_block``).
    """
    parser.update({"train#trainer#epoch_length": iterations + WARMUP, "train#trainer#max_epochs": 1})
    trainer = parser.get_parsed_content("train#trainer")
    if data is not None:
        trainer.data_loader = data
    device = torch.device(trainer.state.device)
    bare = None
    if bare_block > 0:
        batch = data[0] if data else _one_batch(parser)
        bare = BareLoop(
            trainer.network, trainer.loss_function, trainer.optimizer, trainer.amp, batch, device, trainer.to_kwargs
        )
    stamps: list[tuple[float, int]] = []
    paused = bare_seconds = 0.0
    bare_steps = 0

    def after_iteration(engine) -> None:
        nonlocal paused, bare_seconds, bare_steps
        _sync(device)
        now = time.perf_counter()
        stamps.append((now - paused, _images(engine.state.batch)))
        measured = engine.state.iteration - WARMUP
        if bare is not None and measured > 0 and (measured % bare_block == 0 or measured == iterations):
            steps = bare_block if measured % bare_block == 0 else measured % bare_block
            bare_seconds += bare.run(steps)
            bare_steps += steps
            paused += time.perf_counter() - now

    trainer.add_event_handler(Events.ITERATION_COMPLETED, after_iteration)
    trainer.run()
    (t0, _), *rest = stamps[WARMUP - 1 :]
    rate = sum(n for _, n in rest) / (rest[-1][0] - t0)
    return rate, (bare_steps * bare.images / bare_seconds if bare is not None else None)


def engine_rate(parser: ConfigParser, iterations: int, bare_block: int = 0) -> tuple[float, float | None]:
    """Images/s of the bundle's trainer fed one collated batch ``iterations + WARMUP`` times (no data work), and of
    the bare loop between its blocks as in :func:`trainer_rate`."""
    parser = one_batch_parser(parser)
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    return trainer_rate(parser, iterations, data=[batch] * (iterations + WARMUP), bare_block=bare_block)


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


def augment_ms(parser: ConfigParser, repeats: int) -> float:
    """Median milliseconds of the trainer's ``prepare_batch`` (the batch moved to the training device and augmented
    there) on one batch, over ``repeats`` calls after ``WARMUP``, with the trainer's ``to_kwargs``."""
    parser = one_batch_parser(parser)
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    prepare = parser.get_parsed_content("train#prepare_batch")
    device = parser.get_parsed_content("device")
    to_kwargs = parser.get_parsed_content("train#trainer#to_kwargs", default={})
    times = []
    for i in range(WARMUP + repeats):
        _sync(device)
        start = time.perf_counter()
        prepare(batch, device, **to_kwargs)
        _sync(device)
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


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
    name: str,
    bundle: str,
    overrides: dict,
    infer_overrides: dict,
    iterations: int,
    rounds: int,
    block: int,
    out: Path,
    infer: bool = True,
) -> dict:
    """One table row. Each of ``rounds`` rounds runs the trainer with the bare loop between its blocks of
    ``block`` iterations (see :func:`trainer_rate`), then the engine with its own bare blocks; medians are
    reported, with the ratios (trainer / bare, engine / bare) as the medians of each round's. On a shared machine
    the speed of the same loop drifts by 10-20 % within minutes; measured seconds apart, trainer and bare drift
    together and their ratio much less. ``infer`` false leaves inference out (``inference_s_per_input`` None)."""
    samples: dict[str, list[float]] = {"trainer": [], "bare": [], "engine": [], "engine_bare": []}
    for _ in range(rounds):
        for key, measure in (("trainer", trainer_rate), ("engine", engine_rate)):
            rate, bare = measure(_parser(bundle, "train.json", overrides), iterations, bare_block=block)
            samples[key].append(rate)
            samples["bare" if key == "trainer" else "engine_bare"].append(bare)
            # Engines, handlers and loaders can sit in reference cycles: collect them so that each run's cache is
            # freed before the next one is built, and the peak RSS is that of one run rather than of all of them.
            gc.collect()
    ratios = [t / b for t, b in zip(samples["trainer"], samples["bare"], strict=True)]
    engine_ratios = [e / b for e, b in zip(samples["engine"], samples["engine_bare"], strict=True)]
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
    row["engine_ratio"] = statistics.median(engine_ratios)
    row["engine_ratio_rounds"] = engine_ratios
    row["loader_images_per_s"] = loader_rate(parser, iterations)
    row["augment_ms_per_batch"] = augment_ms(parser, iterations)
    row["inference_s_per_input"] = None
    if infer:
        state = parser.get_parsed_content("network_def").state_dict()
        row["inference_s_per_input"] = inference_latency(bundle, infer_overrides, state, out / f"{name}_inference")
    inference = "" if row["inference_s_per_input"] is None else f"inference {row['inference_s_per_input']:.3f} s/input"
    print(
        f"{name:6s}  trainer {row['trainer_images_per_s']:7.1f}/s  bare {row['bare_images_per_s']:7.1f}/s  "
        f"ratio {row['ratio']:.2f} ({min(ratios):.2f}-{max(ratios):.2f})  "
        f"engine {row['engine_images_per_s']:7.1f}/s (/ bare {row['engine_ratio']:.2f})  "
        f"loader {row['loader_images_per_s']:7.1f}/s  augment {row['augment_ms_per_batch']:5.1f} ms/batch  {inference}",
        flush=True,
    )
    return row


def machine() -> str:
    """CPUs, architecture, torch build and GPU, for a result file."""
    gpu = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}, {gpu}"


def add_set_arguments(parser: argparse.ArgumentParser) -> None:
    """``--xray-cases`` and ``--mri-cases``: the sizes of the synthetic sets in ``--out``."""
    parser.add_argument("--xray-cases", type=int, default=XRAY_CASES, help=f"synthetic X-ray patients ({XRAY_CASES})")
    parser.add_argument("--mri-cases", type=int, default=MRI_CASES, help=f"synthetic MRI volumes ({MRI_CASES})")


def synthetic_sets(out: Path, xray_cases: int, mri_cases: int) -> dict[str, tuple[str, Path]]:
    """The benchmark's X-ray and MRI sets in ``out`` (made on first use), as name -> (bundle, root); each set's
    datalist is ``out/<name>_datalist.json``."""
    return {
        "xray": ("spine_xray_ap_seg", _synthetic(out, "xray", xray_cases, write_xray_dataset, build_xray_datalist)),
        "mri": ("spine_mri_seg", _synthetic(out, "mri", mri_cases, write_mri_dataset, build_mri_datalist)),
    }


def _synthetic(out: Path, name: str, cases: int, write, build) -> Path:
    """The synthetic set ``out/name`` and its datalist, generated once; another size needs another ``--out``."""

    def generate(root: Path) -> None:
        write(root, cases, seed=SEED)
        write_datalist(out / f"{name}_datalist.json", build(root, folds=5, seed=SEED))

    return generated_once(out / name, {"cases": cases, "seed": SEED}, generate)


def film_set(out: Path, cases: int, size: tuple[int, int]) -> Path:
    """``cases`` synthetic patients with films of ``size`` (W, H) in ``out/xray_films``, generated once."""
    settings = {"cases": cases, "seed": SEED, "size": list(size)}
    return generated_once(
        out / "xray_films", settings, lambda root: write_xray_dataset(root, cases, seed=SEED, size=size, workers=1)
    )


def _film_size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench_output" / "throughput")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of trainer (with the bare loop) and engine")
    parser.add_argument("--block", type=int, default=5, help="trainer iterations between bare blocks (default 5)")
    # Enough for the measured iterations to fit in one epoch at the default 20: a DataLoader restarting every few
    # batches (as with a handful of cases) stalls the trainer at each restart, which a real data set does not.
    add_set_arguments(parser)
    parser.add_argument(
        "--system-allocator",
        action="store_true",
        help="leave the C allocator as the system sets it, as a bundle run with --keep_freed_memory false does",
    )
    parser.add_argument(
        "--cache-workers",
        type=int,
        help="threads that fill each training cache (default: the bundle's num_workers); not part of any figure",
    )
    parser.add_argument(
        "--film-cases",
        type=int,
        default=FILM_CASES,
        help=f"patients whose AP films are inferred at --film-size too ({FILM_CASES}; 0 skips it, else at least 2)",
    )
    parser.add_argument(
        "--film-size",
        type=_film_size,
        default=FILM_SIZE,
        help="WIDTHxHEIGHT of those films (default %(default)s: the ELL888 films' size)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        help=f"training variants to measure (default on a GPU: {' '.join(GPU_VARIANTS)}; on a CPU: default)",
    )
    args = parser.parse_args(argv)
    variants = args.variants or (GPU_VARIANTS if torch.cuda.is_available() else ["default"])
    if min(args.iterations, args.rounds, args.block) < 1:
        parser.error("--iterations, --rounds and --block must be at least 1")
    if args.cache_workers is not None and args.cache_workers < 1:
        parser.error("--cache-workers must be at least 1")
    if args.film_cases == 1 or args.film_cases < 0:
        parser.error("--film-cases must be 0 or at least 2: latency is timed after the first film")
    # The bundles apply this in their train `initialize`, which the benchmark does not run.
    kept = keep_freed_memory(not args.system_allocator)
    out = args.out.resolve()
    sets = synthetic_sets(out, args.xray_cases, args.mri_cases)
    common = {"progress_bar": False, "val_interval": 10**6}
    if args.cache_workers is not None:
        common.update(
            {"train#dataset#num_workers": args.cache_workers, "validate#dataset#num_workers": args.cache_workers}
        )
    rows = {}
    for key, name in (("xray_ap", "xray"), ("mri", "mri")):
        bundle, root = sets[name]
        data = {"dataset_dir": str(root), "datalist": str(out / f"{name}_datalist.json")}
        train = {**common, **data, "output_dir": str(out / f"{name}_run")}
        for variant in variants:
            suffix = "" if variant == "default" else f"+{variant}"
            row = _measure(
                name + suffix,
                bundle,
                {**train, **VARIANTS[variant]},
                {**data, "infer_split": "all"},
                args.iterations,
                args.rounds,
                args.block,
                out,
                infer=variant == "default",
            )
            rows[key + suffix] = {"variant": variant, "overrides": VARIANTS[variant], **row}
    if args.film_cases and "xray_ap" in rows:
        films = film_set(out, args.film_cases, args.film_size)
        bundle = sets["xray"][0]
        state = _parser(bundle, "inference.json", {}).get_parsed_content("network_def").state_dict()
        seconds = inference_latency(bundle, {"dataset_dir": str(films)}, state, out / "xray_films_inference")
        rows["xray_ap"]["inference_s_per_film_full_size"] = seconds
        print(f"xray    inference {seconds:.3f} s per {args.film_size[0]}x{args.film_size[1]} film", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "iterations": args.iterations,
        "rounds": args.rounds,
        "block": args.block,
        "keep_freed_memory": kept,
        "cache_workers": args.cache_workers,
        "film_size": list(args.film_size) if args.film_cases else None,
        "peak_rss_mb": peak_mb,
        "results": rows,
    }
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    print(f"peak RSS {peak_mb:.0f} MB; freed memory kept: {kept}; written {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
