"""Resume after SIGKILL, safe checkpoint loading, and reproducibility, through the real bundles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, raises_in_chain, small_run_args
from monai.bundle import run

from spine_monai.networks import build_encoder, load_encoder_weights
from spine_monai.package import package_bundle
from spine_monai.workflow import run_config_files

AP = REPO / "bundles" / "spine_xray_ap_seg" / "configs"


def _train_cmd(xray_root, datalist, out, *extra):
    return [sys.executable, "-m", *small_run_args(str(AP / "train.json"), xray_root, datalist, out, 3, *extra)]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(xray_root, datalist, tmp_path):
    out = tmp_path / "run"
    # The first run kills itself with SIGKILL at its 5th iteration: 3 training patients, batch 1, so mid epoch 2.
    kill = (
        "$@train#trainer.add_event_handler(monai.engines.workflow.Events.ITERATION_COMPLETED(once=5), "
        "lambda engine: os.kill(os.getpid(), 9))"
    )
    runs = ["$@train#checkpoint.attach(@train#trainer)", kill, "$@train#trainer.run()"]
    first = subprocess.run(
        _train_cmd(xray_root, datalist, out, "--run", json.dumps(runs)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == -9, first.stderr[-2000:]
    assert sorted(p.name for p in (out / "models").glob("checkpoint_epoch=*.pt")) == ["checkpoint_epoch=1.pt"]
    assert not list((out / "models").glob(".*tmp*")) and not list((out / "models").glob("tmp*"))

    second = subprocess.run(
        _train_cmd(xray_root, datalist, out, "--resume", "true"), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "resuming from" in log and "checkpoint_epoch=1.pt" in log
    assert "Epoch[1] Complete" not in log and "Epoch[2] Complete" in log and "Epoch[3] Complete" in log
    state = torch.load(out / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 3 * state["trainer"]["epoch_length"]
    assert state["trainer"]["max_epochs"] == 3
    assert state["best_model_saver"]["_saved"], "the best-model tracking list was not kept"
    # One latest checkpoint: the killed run's is removed, not left beside the new one.
    assert sorted(p.name for p in (out / "models").glob("checkpoint_epoch=*.pt")) == ["checkpoint_epoch=3.pt"]
    # The redone epoch's iterations appear once in TensorBoard, not twice with different values.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train_loss_iter")]
    assert steps == list(range(1, 3 * state["trainer"]["epoch_length"] + 1)), steps


def test_resume_without_checkpoint_fails_clearly(xray_root, datalist, tmp_path):
    with raises_in_chain(FileNotFoundError, match="holds no checkpoint_epoch=N.pt to resume from"):
        run(
            config_file=str(AP / "train.json"),
            dataset_dir=str(xray_root),
            datalist=str(datalist),
            output_dir=str(tmp_path),
            resume=True,
            num_workers=0,
            progress_bar=False,
        )


class _Payload:
    """A pickle that runs code when loaded: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_runs_nothing(xray_root, datalist, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"model": _Payload(marker)}, evil)
    with raises_in_chain(ValueError, match=r"model\.pt: refused: it holds Python objects besides tensors"):
        run(
            config_file=run_config_files(AP, "evaluate.json"),
            dataset_dir=str(xray_root),
            datalist=str(datalist),
            output_dir=str(tmp_path / "o"),
            ckpt_path=str(evil),
            num_workers=0,
        )
    refused = r"model\.pt: refused: it holds Python objects besides tensors.*weights only"
    with pytest.raises(ValueError, match=refused):
        package_bundle(AP.parent, tmp_path / "dist", ckpt=evil)
    with pytest.raises(ValueError, match=refused):
        load_encoder_weights(build_encoder("resnet18", 1), evil)
    resumed = tmp_path / "resumed"
    (resumed / "models").mkdir(parents=True)
    os.replace(evil, resumed / "models" / "checkpoint_epoch=1.pt")
    with raises_in_chain(ValueError, match=r"checkpoint_epoch=1\.pt: refused: it holds Python objects"):
        run(
            config_file=str(AP / "train.json"),
            dataset_dir=str(xray_root),
            datalist=str(datalist),
            output_dir=str(resumed),
            resume=True,
            num_workers=0,
            **{"train#trainer#max_epochs": 1},
        )
    assert not marker.exists(), "loading the checkpoint executed code"


def test_same_seed_same_metrics(xray_root, datalist, tmp_path):
    results = []
    for name in ("a", "b"):
        out = tmp_path / name
        run(
            config_file=str(AP / "train.json"),
            dataset_dir=str(xray_root),
            datalist=str(datalist),
            output_dir=str(out),
            val_interval=1,
            batch_size=2,
            num_workers=0,
            progress_bar=False,
            seed=7,
            **{"train#trainer#max_epochs": 2},
        )
        results.append(torch.load(out / "models" / "checkpoint_epoch=2.pt", weights_only=True))
    a, b = results
    assert a["best_model_saver"] == b["best_model_saver"]  # same best score and epoch
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_a_run_shorter_than_val_interval_still_validates_and_saves_a_model(xray_root, datalist, tmp_path):
    out = tmp_path / "short"
    run(
        config_file=str(AP / "train.json"),
        dataset_dir=str(xray_root),
        datalist=str(datalist),
        output_dir=str(out),
        val_interval=5,
        batch_size=2,
        num_workers=0,
        progress_bar=False,
        **{"train#trainer#max_epochs": 2},
    )
    assert (out / "models" / "model.pt").is_file()
    saved = torch.load(out / "models" / "checkpoint_epoch=2.pt", weights_only=True)["best_model_saver"]["_saved"]
    assert len(saved) == 1, "the one validation (after the last epoch) should have saved the best model"


def test_the_last_epoch_is_validated_once_when_the_interval_lands_on_it():
    from ignite.engine import Engine

    from spine_monai.handlers import ValidationHandler

    class Validator:
        def __init__(self):
            self.epochs = []

        def run(self, epoch):
            self.epochs.append(epoch)

    for max_epochs, interval, expected in [(7, 5, [5, 7]), (10, 5, [5, 10]), (1, 5, [1])]:
        validator = Validator()
        trainer = Engine(lambda engine, batch: None)
        handler = ValidationHandler(validator=None, interval=interval, epoch_level=True)
        handler.validator = validator
        handler.attach(trainer)
        trainer.run([0], max_epochs=max_epochs)
        assert validator.epochs == expected, (max_epochs, interval, validator.epochs)


def test_the_training_cache_lists_every_bad_record_and_leaves_no_thread_behind():
    import threading
    import time

    from monai.transforms import Lambda

    from spine_monai.data import CacheDataset
    from spine_monai.errors import DataError

    def read(record):
        time.sleep(0.05 * record["i"])
        if record["i"] in (1, 4):
            raise DataError(f"film{record['i']}.jpg", "truncated or corrupt image")
        return record

    load = Lambda(read)
    before = threading.active_count()
    with raises_in_chain(DataError) as info:
        CacheDataset([{"i": i} for i in range(6)], transform=load, num_workers=3, progress=False)
    assert [p.path for p in info.value.problems] == ["film1.jpg", "film4.jpg"]
    assert threading.active_count() == before
    assert len(CacheDataset([{"i": 0}, {"i": 2}], transform=load, num_workers=2, progress=False)) == 2
