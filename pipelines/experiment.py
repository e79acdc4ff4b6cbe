"""What the experiment pipelines share: the run folder, resumable bundle runs with progress, tables and plots.

An experiment (``pipelines.kfold``, ``pipelines.noise``, ``pipelines.train_size``, ``pipelines.architectures``)
plans a list of :class:`Run`: one training of a bundle and the evaluations of the trained model, each one
``python -m monai.bundle run`` command with config overrides. Nothing here trains a model; the bundles do.
:class:`Experiment` owns the folder::

    runs/<experiment>/<timestamp>/          (or --out DIR)
        experiment.json                     arguments, setting, data, and every bundle command
        data/, datalist.json                the synthetic data set (without --dataset-dir)
        <run>/                              the run's output_dir: models/, tensorboard/, eval*/
        <run>/train.log, evaluate_*.log     the bundles' full output
        <run>/train_done.json, done.json    markers that --resume reads
        *.csv, *.md, *.png                  the experiment's tables and plots

A run whose ``done.json`` exists is skipped; one with ``train_done.json`` is only evaluated again; one with an
interval checkpoint (``models/checkpoint_epoch=N.pt``) resumes training with the ``resume=True`` override.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache, wraps
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipelines.common import BUNDLES, REPO, bundle_command, config_files
from spine_monai.data import build_mri_datalist, build_xray_datalist, read_datalist, write_datalist
from spine_monai.errors import DataError
from spine_monai.workflow import (
    OverrideSyntaxError,
    UnknownOverrideError,
    check_bundle_overrides,
    config_ids,
    latest_checkpoint,
    parse_overrides,
    read_bundle_config,
)

__all__ = [
    "ALL_BUNDLES",
    "BundleFailed",
    "Experiment",
    "Modality",
    "Run",
    "Scale",
    "Step",
    "TrainingStats",
    "count_parameters",
    "experiment_parser",
    "launch_child",
    "launch_in_process",
    "markdown_table",
    "mean_sd_table",
    "mean_sd_text",
    "parse_training_log",
    "pyplot",
    "grouped_bars",
    "save_plot",
    "read_summary",
]

RUNS = REPO / "runs"
XRAY_BUNDLES = ("spine_xray_ap_seg", "spine_xray_lat_seg")
MRI_BUNDLE = "spine_mri_seg"
ALL_BUNDLES = (*XRAY_BUNDLES, MRI_BUNDLE)
MRI_SMALL_SHAPE = (8, 96, 96)  # sagittal slices, rows, columns: 2.5 mm in-plane over the synthetic 240 mm field

# Set by the experiment itself (its own options choose them); a user override of one would contradict the plan.
CONTROLLED = {
    "dataset_dir": "--dataset-dir",
    "datalist": "--datalist",
    "output_dir": "--out",
    "eval_dir": "--out",
    "fold": "the experiment's folds or --fold",
    "eval_split": "the experiment",
    "noise_std": "the noise experiment (--sigma, --bit-depth)",
    "seed": "--seed",
    "resume": "--resume",
    "train#trainer#max_epochs": "--epochs",
    "progress_bar": "the experiment's own progress bars",
}
RUNTIME_ARGS = ("out", "resume", "in_process")


@dataclass(frozen=True)
class Scale:
    """The sizes of one setting (the small CPU default, or ``--full``) for one modality.

    Attributes:
        cases: synthetic patients (X-ray) or volumes (MRI) generated when no ``--dataset-dir`` is given.
        folds: folds of the synthetic datalist.
        test_fraction: fraction of the synthetic patients held out in the testing list.
        epochs: training epochs.
        overrides: bundle overrides, passed to each command whose configs define the key.
    """

    cases: int
    folds: int
    test_fraction: float
    epochs: int
    overrides: dict = field(default_factory=dict)


_XRAY_SMALL = {"spatial_size": [192, 128], "batch_size": 4, "num_workers": 0, "val_interval": 2}
# Coarser in-plane spacing and smaller patches than the bundle's 1 mm / 256 px: the same pipeline, CPU-sized.
_MRI_SMALL = {
    "in_plane_spacing": [3.0, 3.0],
    "patch_size": [96, 96],
    "slices_per_volume": 2,
    "num_workers": 0,
    "val_interval": 5,
}
_FULL = {"num_workers": 4, "val_interval": 5}
SCALES = {
    "xray": {
        "small": Scale(cases=24, folds=4, test_fraction=0.25, epochs=10, overrides=_XRAY_SMALL),
        "full": Scale(cases=160, folds=5, test_fraction=0.2, epochs=100, overrides=_FULL),
    },
    "mri": {
        "small": Scale(cases=12, folds=3, test_fraction=0.25, epochs=10, overrides=_MRI_SMALL),
        "full": Scale(cases=30, folds=5, test_fraction=0.2, epochs=100, overrides=_FULL),
    },
}


@dataclass(frozen=True)
class Modality:
    """How a bundle's evaluation tables look.

    Attributes:
        name: ``"xray"`` or ``"mri"``.
        key: the ``summary.csv`` column that names a row (``structure`` or ``class``).
        metrics: the metric columns the experiments keep.
        not_in_mean: rows left out of the mean Dice (the MRI background).
    """

    name: str
    key: str
    metrics: tuple[str, ...]
    not_in_mean: tuple[str, ...] = ()


XRAY = Modality("xray", "structure", ("Dice", "Jaccard", "ToleranceDice", "FP", "FN"))
MRI = Modality("mri", "class", ("Dice", "IoU", "FP", "FN"), not_in_mean=("background",))


def modality_of(bundle: str) -> Modality:
    """The :class:`Modality` of a segmentation bundle of this repository."""
    return MRI if bundle == MRI_BUNDLE else XRAY


class BundleFailed(RuntimeError):
    """A bundle command failed; the message names its log."""


def reports_bundle_failure(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorate an experiment's ``main(argv)``: a failed bundle run prints one line naming its log and exits 1.

    Finished runs stay finished, so the same command with ``--resume`` picks up after the failure.
    """

    @wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except BundleFailed as e:
            print(f"error: {e}")
            return 1

    return wrapper


# --------------------------------------------------------------------------------------------------
# command line


def experiment_parser(
    name: str, doc: str | None, bundles: Sequence[str] = ALL_BUNDLES, small_epochs: int = 10
) -> argparse.ArgumentParser:
    """The argument parser with the options every experiment has; the experiment adds its own.

    Args:
        name: the experiment's module name under ``pipelines``.
        doc: the module docstring, shown by ``--help``.
        bundles: the bundles the experiment accepts.
        small_epochs: the small setting's epochs, for the help text.

    Returns:
        the parser.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m pipelines.{name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = parser.add_argument_group("common options")
    g.add_argument("--bundle", default="spine_xray_ap_seg", choices=list(bundles), help="default spine_xray_ap_seg")
    g.add_argument("--full", action="store_true", help="the GPU setting: more data, full image size, 100 epochs")
    g.add_argument(
        "--epochs", type=int, default=None, help=f"training epochs (default {small_epochs}, or 100 with --full)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the synthetic data, the splits and training")
    g.add_argument("--cases", type=int, default=None, help="synthetic patients/volumes (default: the setting's)")
    g.add_argument("--dataset-dir", type=Path, default=None, help="real data instead of synthetic")
    g.add_argument("--datalist", type=Path, default=None, help="its datalist (default DATASET_DIR/datalist.json)")
    g.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra bundle override for every command whose configs define KEY, e.g. -o spatial_size=[192,128]",
    )
    g.add_argument("--out", type=Path, default=None, help=f"experiment folder (default runs/{name}/<timestamp>)")
    g.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the latest runs/{name}/* (or --out DIR) with its stored arguments, skipping finished runs",
    )
    g.add_argument(
        "--in-process",
        action="store_true",
        help="run the bundles inside this process (monai.bundle.run) instead of child processes; for tests",
    )
    return parser


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, document) -> None:
    """Write JSON through a temporary file, so an interrupted write never leaves a half marker."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_jsonable(document), indent=1) + "\n")
    os.replace(tmp, path)


def _experiment_folder(name: str, out: Path | None, resume: bool) -> Path:
    if out is not None:
        folder = out.resolve()
        stored = (folder / "experiment.json").is_file()
        if resume and not stored:
            raise SystemExit(f"error: --resume: {folder} holds no experiment.json to resume")
        if not resume and stored:
            raise SystemExit(f"error: {folder} already holds an experiment; add --resume to continue it")
        return folder
    base = RUNS / name
    if resume:
        found = sorted(p for p in base.glob("*") if (p / "experiment.json").is_file()) if base.is_dir() else []
        if not found:
            raise SystemExit(f"error: --resume: no earlier experiment in {base}")
        return found[-1]
    folder = base / datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 1
    while folder.exists():  # two starts within one second
        folder = base / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{n}"
        n += 1
    return folder


@cache
def _config_ids(configs: tuple[str, ...]) -> frozenset[str]:
    from monai.bundle import ConfigParser

    return frozenset(config_ids(ConfigParser.load_config_files(list(configs))))


def defined(configs: Sequence[str], overrides: Mapping[str, object]) -> dict:
    """The overrides whose key the merged ``configs`` define (``val_interval`` goes to train.json only)."""
    ids = _config_ids(tuple(configs))
    return {k: v for k, v in overrides.items() if k in ids}


def config_value(bundle: str, config: str, key: str):
    """A raw value of a bundle config file, e.g. ``config_value(b, "train.json", "val_interval")``."""
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_file(BUNDLES / bundle / "configs" / config)[key]


def machine() -> str:
    """The machine in words: architecture, CPU count, and the GPU if torch sees one."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}"


# --------------------------------------------------------------------------------------------------
# launching a bundle

_TIME = r"Time taken: (\d+):(\d+):([\d.]+)"
_EPOCH_DONE = re.compile(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete\. " + _TIME)
_VALIDATION_DONE = re.compile(r"SupervisedEvaluator - INFO - Engine run finished\. " + _TIME)
_LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def _printable(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in ["python", *cmd[1:]])


def _header(cmd: Sequence[str], mode: str) -> str:
    return f"# {datetime.now().isoformat(timespec='seconds')} ({mode}) $ {_printable(cmd)}\n"


def _advance(bar: tqdm | None, line: str) -> None:
    """Move the run's bar to the epoch a trainer's ``Epoch[N] Complete`` line reports."""
    if bar is not None and (m := _EPOCH_DONE.search(line)):
        bar.update(int(m.group(1)) - bar.n)


def _tail(log: Path, lines: int = 15) -> str:
    return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])


def launch_child(configs: Sequence[str], overrides: Mapping[str, object], log: Path, bar: tqdm | None = None) -> float:
    """Run a bundle as ``python -m monai.bundle run`` in a child process, as a user would.

    The child's output is appended to ``log`` line by line as it comes, and each ``Epoch[N] Complete`` of its
    trainer moves ``bar``.

    Args:
        configs: the config files, merged in order.
        overrides: config id -> value.
        log: the log file; an earlier attempt's output stays above a ``# <time> $ <command>`` header.
        bar: the run's progress bar, or ``None``.

    Returns:
        the wall time in seconds.

    Raises:
        BundleFailed: when the child exits with an error; the message holds the log's last lines.
    """
    cmd = bundle_command(configs, overrides)
    # Unbuffered, so that epoch lines arrive when they are written rather than in blocks.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(_header(cmd, "child process"))
        f.flush()
        with subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                f.write(line)
                _advance(bar, line)
    if proc.returncode:
        raise BundleFailed(f"bundle failed (exit {proc.returncode}); see {log}:\n{_tail(log)}")
    return time.perf_counter() - start


class _LogHandler(logging.FileHandler):
    """The in-process counterpart of reading a child's output: write every record to the log, move the bar."""

    def __init__(self, log: Path, bar: tqdm | None) -> None:
        super().__init__(log, mode="a")
        self.setFormatter(logging.Formatter(_LOG_FORMAT))
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        _advance(self.bar, self.format(record))


def launch_in_process(
    configs: Sequence[str], overrides: Mapping[str, object], log: Path, bar: tqdm | None = None
) -> float:
    """Run a bundle with ``monai.bundle.run`` in this process; same arguments and result as :func:`launch_child`.

    It saves the ~10 s a child spends importing torch and MONAI, which dominates micro-scale tests. The
    bundle's logging.conf is not applied (it would replace this process's handlers); the log gets what
    reaches the root logger, which includes ignite's epoch lines that the progress bar and the throughput
    read, but not MONAI's own console loggers (the metrics lines), which a child's log does hold.
    """
    from monai.bundle import run

    cmd = bundle_command(configs, overrides)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(_header(cmd, "in process"))
    handler = _LogHandler(log, bar)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        values = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as PYTHONWARNINGS=ignore does for a child
            run(config_file=list(configs), logging_file=False, **values)
    except Exception as e:
        handler.stream.write(traceback.format_exc())
        raise BundleFailed(f"bundle failed ({e!r}); see {log}") from e
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
    return time.perf_counter() - start


@dataclass(frozen=True)
class TrainingStats:
    """What a training log says about speed.

    Attributes:
        epochs: epochs completed (an epoch redone after a resume counts once).
        seconds: the sum of ignite's per-epoch times, less the validation runs inside them.
    """

    epochs: int
    seconds: float


def _seconds(match: re.Match) -> float:
    h, m, s = match.groups()[-3:]
    return int(h) * 3600 + int(m) * 60 + float(s)


def parse_training_log(log: Path) -> TrainingStats:
    """Training time per epoch from a bundle's training log.

    Ignite logs ``Epoch[N] Complete. Time taken: ...`` for the trainer after the epoch's handlers ran,
    including the validation (``SupervisedEvaluator ... Engine run finished. Time taken: ...``), which is
    subtracted. Process start, data caching and the final model export are not counted; checkpoint writing is.
    """
    epochs: dict[int, float] = {}
    validation = 0.0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("# "):  # a new attempt
            validation = 0.0
        elif m := _VALIDATION_DONE.search(line):
            validation += _seconds(m)
        elif m := _EPOCH_DONE.search(line):
            epochs[int(m.group(1))] = _seconds(m) - validation
            validation = 0.0
    return TrainingStats(len(epochs), sum(epochs.values()))


# --------------------------------------------------------------------------------------------------
# runs


@dataclass(frozen=True)
class Step:
    """One bundle command: config files merged in order and the overrides."""

    configs: tuple[str, ...]
    overrides: dict

    def command(self) -> str:
        """The command line, as a user would paste it."""
        return _printable(bundle_command(self.configs, self.overrides))


@dataclass
class Run:
    """One training of a bundle and the evaluations of its model; ``folder`` is its ``output_dir``.

    Attributes:
        name: the run's name and sub-folder.
        folder: the bundle's ``output_dir``.
        train: the training command.
        evaluations: evaluation name -> command; each writes its own ``eval_dir``.
        epochs: training epochs.
        train_images: training images per epoch (MRI: 2-D slices, volumes x ``slices_per_volume``).
        info: the run's coordinates in the experiment's tables (fold, size, architecture...).
    """

    name: str
    folder: Path
    train: Step
    evaluations: dict[str, Step]
    epochs: int
    train_images: int
    info: dict = field(default_factory=dict)


def read_summary(eval_dir: str | Path, modality: Modality) -> pd.DataFrame:
    """An evaluation's ``summary.csv``: the row name, ``cases`` and the modality's metric columns."""
    summary = pd.read_csv(Path(eval_dir) / "summary.csv")
    return summary[[modality.key, "cases", *modality.metrics]]


def mean_dice(summary: pd.DataFrame, modality: Modality) -> float:
    """The mean Dice over the rows of a summary (MRI: without the background)."""
    rows = summary[~summary[modality.key].isin(modality.not_in_mean)]
    return float(rows["Dice"].mean())


class Experiment:
    """An experiment's folder, arguments, data, planned runs and their execution.

    Args:
        name: the experiment, also its folder under ``runs/``.
        parser: its argument parser (from :func:`experiment_parser` plus its own options).
        argv: the command line; ``None`` for ``sys.argv[1:]``.
        small: changes to the small setting's :class:`Scale` (e.g. ``{"cases": 32}``).
        full: changes to the ``--full`` setting's :class:`Scale`.

    With ``--resume`` the arguments stored in the folder's ``experiment.json`` are used, and any that the
    command line sets differently are reported and ignored: a resumed experiment finishes what it started.
    """

    def __init__(
        self,
        name: str,
        parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None,
        small: Mapping[str, object] | None = None,
        full: Mapping[str, object] | None = None,
    ) -> None:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        self.name = name
        self.folder = _experiment_folder(name, args.out, args.resume)
        self.stored: dict = {}
        if args.resume:
            self.stored = json.loads((self.folder / "experiment.json").read_text())
            args = self._stored_arguments(parser, args)
        self.args = args
        self.argv = argv
        self.bundle: str = args.bundle
        self.modality = modality_of(self.bundle)
        level = "full" if args.full else "small"
        self.scale = replace(SCALES[self.modality.name][level], **dict((full if args.full else small) or {}))
        self.epochs: int = args.epochs or self.scale.epochs
        try:
            user = parse_overrides(args.override)
        except OverrideSyntaxError as e:
            raise SystemExit(f"error: {e}") from e
        self._check_overrides(user)
        self.overrides = {"progress_bar": False, "write_predictions": False, **self.scale.overrides, **user}
        if args.datalist and not args.dataset_dir:
            raise SystemExit("error: --datalist needs --dataset-dir (the root its paths are relative to)")
        self.launch: Callable[..., float] = launch_in_process if args.in_process else launch_child
        self.runs: list[Run] = []
        self.dataset_dir: Path | None = None
        self.datalist: Path | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        print(f"{name}: {self.folder}" + (" (resumed)" if args.resume else ""), flush=True)

    def _stored_arguments(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
        stored = dict(self.stored["arguments"])
        current = _jsonable(vars(args))
        for key, value in current.items():
            if key in RUNTIME_ARGS or key not in stored:
                continue
            if value != stored[key] and value != _jsonable(parser.get_default(key)):
                flag = "--" + key.replace("_", "-")
                print(f"note: {flag} {value} ignored; this experiment was started with {stored[key]}")
        merged = {**current, **{k: v for k, v in stored.items() if k not in RUNTIME_ARGS}}
        for key in ("dataset_dir", "datalist"):
            merged[key] = Path(merged[key]) if merged.get(key) else None
        return argparse.Namespace(**merged)

    def _check_overrides(self, user: Mapping[str, object]) -> None:
        try:
            check_bundle_overrides(BUNDLES / self.bundle / "configs", user)
        except UnknownOverrideError as e:
            raise SystemExit(f"error: {self.bundle}: {e}") from e
        taken = [f"{k} (set by {CONTROLLED[k]})" for k in user if k in CONTROLLED]
        if taken:
            raise SystemExit(f"error: these overrides are the experiment's own: {', '.join(taken)}")

    def setting(self, key: str):
        """The value of a training config key in this experiment: an override if one is set, else train.json's."""
        return self.overrides.get(key, config_value(self.bundle, "train.json", key))

    # ----------------------------------------------------------------------------------------------
    # data

    def prepare_data(self, folds: int | None = None) -> dict:
        """Use ``--dataset-dir``/``--datalist``, or write the synthetic data set and its datalist once.

        Args:
            folds: folds of the synthetic datalist; the setting's when ``None``.

        Returns:
            the datalist document.
        """
        a = self.args
        if a.dataset_dir:
            self.dataset_dir = Path(a.dataset_dir).resolve()
            self.datalist = Path(a.datalist).resolve() if a.datalist else self.dataset_dir / "datalist.json"
            try:
                return read_datalist(self.datalist)
            except DataError as e:
                raise SystemExit(f"error: {e}") from e
        data, datalist = self.folder / "data", self.folder / "datalist.json"
        cases = a.cases or self.scale.cases
        if not data.exists():
            # Written beside and renamed, so an interrupted generation is redone rather than half used.
            partial = self.folder / "data.partial"
            shutil.rmtree(partial, ignore_errors=True)
            print(f"synthetic data: {cases} {'volumes' if self.modality is MRI else 'patients'} -> {data}", flush=True)
            if self.modality is MRI:
                from spine_monai.synthetic.mri import DEFAULT_SHAPE, write_mri_dataset

                shape = DEFAULT_SHAPE if a.full else MRI_SMALL_SHAPE
                write_mri_dataset(partial, cases, seed=a.seed, shape=shape)
            else:
                from spine_monai.synthetic.xray import write_xray_dataset

                write_xray_dataset(partial, cases, seed=a.seed)
            partial.rename(data)
        if not datalist.exists():
            n_folds = folds or self.scale.folds
            build = build_mri_datalist if self.modality is MRI else build_xray_datalist
            write_datalist(datalist, build(data, folds=n_folds, test_fraction=self.scale.test_fraction, seed=a.seed))
        self.dataset_dir, self.datalist = data, datalist
        return read_datalist(datalist)

    def images_per_epoch(self, records: int) -> int:
        """2-D training images per epoch for ``records`` training records (an MRI volume gives several slices)."""
        return records * int(self.setting("slices_per_volume")) if self.modality is MRI else records

    # ----------------------------------------------------------------------------------------------
    # planning and running

    def add_run(
        self,
        name: str,
        evaluations: Mapping[str, Mapping[str, object]],
        train_records: int,
        train: Mapping[str, object] | None = None,
        variant: str | None = None,
        epochs: int | None = None,
        datalist: Path | None = None,
        info: Mapping[str, object] | None = None,
    ) -> Run:
        """Plan a run: one training and its evaluations.

        Args:
            name: the run's name and sub-folder.
            evaluations: evaluation name -> its own overrides (``eval_split``, ``fold``, ``noise_std``...). With
                one evaluation it writes ``<run>/eval``, with several ``<run>/eval_<name>``.
            train_records: training records (patients or volumes) per epoch.
            train: the training's own overrides (``fold``, ``noise_std``, ``seed``...).
            variant: a variant config file of the bundle merged on top, e.g. ``segresnet.json``.
            epochs: training epochs; the experiment's when ``None``.
            datalist: the run's own datalist; the experiment's when ``None``.
            info: the run's coordinates in the tables (not ``name``, ``epochs``, ``train``, ``evaluations``).

        Returns:
            the planned run.
        """
        taken = {"name", "epochs", "train", "evaluations"} & set(info or {})
        if taken:
            raise ValueError(f"run info may not use the record's own keys {sorted(taken)}")
        folder = self.folder / name
        extra = [variant] if variant else []
        epochs = epochs or self.epochs
        common = {"dataset_dir": self.dataset_dir, "datalist": datalist or self.datalist, "output_dir": folder}
        train_configs = tuple(config_files(self.bundle, "train.json", *extra))
        train_step = Step(
            train_configs,
            {
                **common,
                **defined(train_configs, self.overrides),
                "seed": self.args.seed,
                "train#trainer#max_epochs": epochs,
                **(train or {}),
            },
        )
        eval_configs = tuple(config_files(self.bundle, "evaluate.json", *extra))
        steps = {}
        for ename, own in evaluations.items():
            eval_dir = folder / ("eval" if len(evaluations) == 1 else f"eval_{ename}")
            steps[ename] = Step(
                eval_configs, {**common, **defined(eval_configs, self.overrides), "eval_dir": eval_dir, **own}
            )
        run = Run(name, folder, train_step, steps, epochs, self.images_per_epoch(train_records), dict(info or {}))
        self.runs.append(run)
        return run

    def write_config(self) -> None:
        """Write ``experiment.json``: the arguments, setting, data and every planned command."""
        now = datetime.now().isoformat(timespec="seconds")
        command = f"python -m pipelines.{self.name} {shlex.join(self.argv)}".strip()
        doc = {
            "experiment": self.name,
            "folder": self.folder,
            "created": self.stored.get("created", now),
            "command": self.stored.get("command", command),
            "resumed": [*self.stored.get("resumed", []), {"at": now, "command": command}] if self.stored else [],
            "machine": machine(),
            "runner": "in process (monai.bundle.run)" if self.args.in_process else "child process per bundle command",
            "arguments": {k: v for k, v in vars(self.args).items() if k not in RUNTIME_ARGS},
            "bundle": self.bundle,
            "setting": "full" if self.args.full else "small",
            "epochs": self.epochs,
            "overrides": self.overrides,
            "data": {
                "dataset_dir": self.dataset_dir,
                "datalist": self.datalist,
                "synthetic": not self.args.dataset_dir,
            },
            "note": "a training resumed from its checkpoint runs the same command plus --resume True",
            "runs": {
                r.name: {
                    "output_dir": r.folder,
                    "train": r.train.command(),
                    "evaluate": {k: s.command() for k, s in r.evaluations.items()},
                }
                for r in self.runs
            },
        }
        write_json(self.folder / "experiment.json", doc)

    def execute(self) -> list[dict]:
        """Write ``experiment.json`` and carry out every planned run, skipping finished ones.

        Returns:
            each run's ``done.json`` record, in plan order.

        Raises:
            BundleFailed: when a bundle command fails; finished runs stay finished for ``--resume``.
        """
        self.write_config()
        return [self._execute(run, f"[{i}/{len(self.runs)}]") for i, run in enumerate(self.runs, 1)]

    def _execute(self, run: Run, tag: str) -> dict:
        done = run.folder / "done.json"
        if done.is_file():
            # The plan's coordinates, which the same stored arguments reproduce, name the run in the tables.
            record = {**json.loads(done.read_text()), "name": run.name, **run.info}
            tqdm.write(f"{tag} {run.name}: finished earlier, skipped ({_summary_line(record)})")
            return record
        run.folder.mkdir(parents=True, exist_ok=True)
        train_done = run.folder / "train_done.json"
        trained = json.loads(train_done.read_text()) if train_done.is_file() else None
        checkpoint = latest_checkpoint(run.folder / "models") if trained is None else None
        initial = run.epochs if trained else int(re.search(r"(\d+)\.pt$", checkpoint).group(1)) if checkpoint else 0
        with tqdm(
            total=run.epochs, initial=initial, desc=f"{tag} {run.name}", unit="epoch", leave=False, dynamic_ncols=True
        ) as bar:
            if trained is None:
                overrides = {**run.train.overrides, **({"resume": True} if checkpoint else {})}
                log = run.folder / "train.log"
                seconds = self.launch(run.train.configs, overrides, log, bar)
                stats = parse_training_log(log)
                trained = {
                    "seconds": seconds,
                    "resumed_from": checkpoint,
                    "epochs_logged": stats.epochs,
                    "epoch_seconds": stats.seconds,
                    "images_per_epoch": run.train_images,
                    "train_images_per_s": run.train_images * stats.epochs / stats.seconds if stats.seconds else None,
                }
                write_json(train_done, trained)
            evaluations = {}
            for ename, step in run.evaluations.items():
                bar.set_postfix_str(f"evaluating {ename}")
                seconds = self.launch(step.configs, step.overrides, run.folder / f"evaluate_{ename}.log")
                eval_dir = step.overrides["eval_dir"]
                evaluations[ename] = {
                    "eval_dir": eval_dir,
                    "seconds": seconds,
                    "mean_dice": mean_dice(read_summary(eval_dir, self.modality), self.modality),
                }
        record = {"name": run.name, **run.info, "epochs": run.epochs, "train": trained, "evaluations": evaluations}
        write_json(done, record)
        tqdm.write(f"{tag} {run.name}: {_summary_line(record)}")
        return json.loads(done.read_text())

    def summaries(self, records: Sequence[dict], evaluation: str | None = None) -> pd.DataFrame:
        """The runs' evaluation summaries stacked, one row per run, evaluation and structure/class.

        Args:
            records: ``done.json`` records from :meth:`execute`.
            evaluation: keep only this evaluation.

        Returns:
            the run's info columns, ``evaluation``, then the summary columns.
        """
        frames = []
        for rec in records:
            info = {k: v for k, v in rec.items() if k not in ("name", "epochs", "train", "evaluations")}
            for ename, ev in rec["evaluations"].items():
                if evaluation is None or ename == evaluation:
                    s = read_summary(ev["eval_dir"], self.modality)
                    head = pd.DataFrame([{"run": rec["name"], **info, "evaluation": ename}] * len(s))
                    frames.append(pd.concat([head, s], axis=1))
        return pd.concat(frames, ignore_index=True)

    def report(self, title: str, tables: Mapping[str, pd.DataFrame], plots: Sequence[Path] = ()) -> Path:
        """Write ``summary.md``: a title, the setting, the tables in markdown and the plot paths; print it.

        Returns:
            the path of ``summary.md``.
        """
        lines = [
            f"# {title}",
            "",
            f"- bundle `{self.bundle}`, setting `{'full' if self.args.full else 'small'}`, {self.epochs} epochs, "
            f"seed {self.args.seed}",
            f"- data: {self.dataset_dir} ({'synthetic' if not self.args.dataset_dir else 'given'})",
            f"- overrides: {json.dumps(_jsonable(self.overrides))}",
            "",
        ]
        for name, df in tables.items():
            lines += [f"## {name}", "", markdown_table(df), ""]
        lines += [f"plot: `{p}`" for p in plots]
        path = self.folder / "summary.md"
        path.write_text("\n".join(lines) + "\n")
        print("\n" + "\n".join(lines))
        return path


def _summary_line(record: dict) -> str:
    dice = ", ".join(f"{k} {v['mean_dice']:.3f}" for k, v in record["evaluations"].items())
    minutes = (record["train"]["seconds"] + sum(v["seconds"] for v in record["evaluations"].values())) / 60
    return f"mean Dice {dice}; {minutes:.1f} min"


# --------------------------------------------------------------------------------------------------
# tables and plots


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.3f}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table of ``df`` (index dropped; floats with 3 decimals, numbers right-aligned)."""
    cols = [str(c) for c in df.columns]
    align = ["---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def mean_sd_text(means: Sequence[float], sds: Sequence[float], digits: int = 3) -> list[str]:
    """``"mean ± sd"`` strings; the sd is left out where it is undefined (a single value)."""
    return [f"{m:.{digits}f}" + ("" if pd.isna(s) else f" ± {s:.{digits}f}") for m, s in zip(means, sds)]


def mean_sd_table(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """``metric`` columns as ``"mean ± sd"`` text over the rows of each ``by`` group (sd with n - 1), and ``n``."""
    g = df.groupby(list(by), sort=False)[list(metrics)]
    mean, sd = g.mean(), g.std(ddof=1)
    out = pd.DataFrame(index=mean.index)
    out["n"] = g.size()
    for m in metrics:
        out[m] = mean_sd_text(mean[m], sd[m], digits)
    return out.reset_index()


def pyplot():
    """``matplotlib.pyplot`` with the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(ax, table: pd.DataFrame) -> None:
    """One group of bars per row of ``table`` along x, one bar per column within each group, labelled by column.

    Args:
        ax: the matplotlib axes to draw on.
        table: values to draw; its index names the groups and its columns the bars.
    """
    width = 0.8 / len(table.columns)
    for i, column in enumerate(table.columns):
        x = [j + (i - (len(table.columns) - 1) / 2) * width for j in range(len(table))]
        ax.bar(x, table[column], width, label=column)
    ax.set_xticks(range(len(table)), table.index, rotation=30, ha="right")


def save_plot(exp: Experiment, fig, ax, title: str, ylabel: str = "Dice on the testing list") -> Path:
    """Finish an experiment's figure (a 0-1 y axis, title, legend when labelled) and write it as ``<name>.png``.

    Args:
        exp: the experiment; the figure goes to its folder, named after it.
        fig: the matplotlib figure, closed once written.
        ax: its axes.
        title: the figure's title.
        ylabel: the y axis label.

    Returns:
        the written PNG.
    """
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = exp.folder / f"{exp.name}.png"
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def count_parameters(bundle: str, variant: str | None = None, overrides: Mapping[str, object] | None = None) -> int:
    """Parameters of a bundle's ``network_def``, with a variant config merged and overrides applied.

    Args:
        bundle: the bundle's folder name.
        variant: a variant config file, e.g. ``"segresnet.json"``.
        overrides: config overrides (those train.json defines are applied, e.g. ``structures``).

    Returns:
        the number of parameters.
    """

    configs = config_files(bundle, "train.json", *([variant] if variant else []))
    parser = read_bundle_config(configs)
    for key, value in defined(configs, overrides or {}).items():
        parser[key] = value
    network = parser.get_parsed_content("network_def")
    return sum(p.numel() for p in network.parameters())
