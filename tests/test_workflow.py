"""spine_monai.workflow: the command line's overrides read as MONAI's runner reads them, overlays merged in order,
and the run settings every config reads from one place."""

from __future__ import annotations

import json
from pathlib import Path

import monai.bundle
import pytest
import torch
from conftest import REPO
from ignite.handlers import ProgressBar
from monai.handlers import EarlyStopHandler

from spine_monai.workflow import (
    OverrideSyntaxError,
    Runtime,
    UnknownOverrideError,
    check_overrides,
    cli_overrides,
    parse_overrides,
    read_bundle_config,
    run_config_files,
)

MAIN = str(Path(monai.bundle.__file__).with_name("__main__.py"))
AP = REPO / "bundles" / "spine_xray_ap_seg" / "configs"


def test_command_line_overrides_are_read_as_fire_reads_them(tmp_path):
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"batch_size": 4, "fold": 1}))
    argv = [MAIN, "run", "--config_file", "['a.json','b.json']", "--fold=2", "--spatial_size", "[256, 160]"]
    argv += ["--progress_bar", "false", "--resume", "--args_file", str(args_file), "--train#trainer#max_epochs", "3"]
    files, overrides = cli_overrides(argv)
    assert files == ["a.json", "b.json"]
    # the command line wins over the args file; the runner's own arguments are not overrides
    assert overrides == {
        "batch_size": 4,
        "fold": 2,
        "spatial_size": [256, 160],
        "progress_bar": "false",
        "resume": True,
        "train#trainer#max_epochs": 3,
    }
    assert cli_overrides(["/usr/bin/pytest", "-q"]) is None
    assert cli_overrides([MAIN, "verify_metadata", "--meta_file", "m.json"]) is None


def test_the_overrides_of_a_command_line_are_checked_against_the_bundle():
    base = [MAIN, "run", "--config_file", str(AP / "train.json")]
    assert check_overrides([*base, "--batch_size", "2", "--network_def#dropout", "0.1"])
    with pytest.raises(UnknownOverrideError, match=r"max_epoch \(did you mean"):
        check_overrides([*base, "--max_epoch", "3"])
    # a component's _target_ replaced on the command line: its own arguments are the ones checked
    assert check_overrides([*base, "--network_def#_target_", "AttentionUnet", "--network_def#kernel_size", "5"])
    with pytest.raises(UnknownOverrideError, match="AttentionUnet takes no argument 'kernel_sizes'"):
        check_overrides([*base, "--network_def#_target_", "AttentionUnet", "--network_def#kernel_sizes", "5"])
    # nothing to check when the process is not the runner's command line
    assert check_overrides(["/usr/bin/pytest", "--max_epoch", "3"])


def test_override_text_errors_name_every_bad_one():
    assert parse_overrides(["a=1", "b=[1, 2]", "c=text"]) == {"a": 1, "b": [1, 2], "c": "text"}
    with pytest.raises(OverrideSyntaxError, match="'x' is not KEY=VALUE; override '=2' is not KEY=VALUE"):
        parse_overrides(["x", "a=1", "=2"])
    assert issubclass(OverrideSyntaxError, ValueError)


def test_overlays_follow_the_configs_they_are_merged_on(tmp_path):
    names = [Path(f).name for f in run_config_files(AP, "multi_gpu_evaluate.json", "hires.json")]
    assert names == ["train.json", "evaluate.json", "multi_gpu_evaluate.json", "hires.json"]
    own = tmp_path / "mine.json"
    assert run_config_files(AP, "evaluate.json", str(own))[-1] == str(own)
    assert [Path(f).name for f in run_config_files(AP, "inference.json")] == ["inference.json"]


def test_run_settings_are_read_once_from_text():
    runtime = Runtime("cpu", amp="false", channels_last=None, cache_on_device="no", num_workers=3, progress_bar="off")
    assert (runtime.amp, runtime.cache_on_device, runtime.progress_bar) == (False, False, False)
    assert runtime.channels_last and runtime.memory_format is torch.channels_last  # a CPU's default
    assert runtime.light_loader_workers == 0 and runtime.loader_workers == 3
    with pytest.raises(ValueError, match="expected a boolean"):
        Runtime("cpu", progress_bar="maybe")


def test_optional_training_handlers_follow_their_keys(xray_root, datalist):
    def handlers(**overrides):
        data = {"dataset_dir": str(xray_root), "datalist": str(datalist), "num_workers": 0}
        parser = read_bundle_config(AP / "train.json", {**data, **overrides})
        return [type(h) for h in parser.get_parsed_content("train#handlers")]

    assert ProgressBar in handlers() and EarlyStopHandler not in handlers()
    assert ProgressBar not in handlers(progress_bar="false")
    assert EarlyStopHandler in handlers(early_stop_patience=3)


def test_the_checkpoint_loader_reads_the_file_once_and_checks_it(tmp_path, monkeypatch):
    from ignite.engine import Engine
    from monai.networks.nets import UNet

    from spine_monai.handlers import CheckpointLoader
    from spine_monai.workflow import record_input_grid

    def unet():
        return UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))

    identity = {"bundle": "b", "inputs": ["AP"], "outputs": ["x", "y"]}
    trained = record_input_grid(unet(), [64, 32], identity)
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))

    net = unet()
    CheckpointLoader(str(path), {"model": net}, input_grid=[64, 32], model_identity=identity)(Engine(lambda e, b: None))
    assert reads == [str(path)]
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), trained.state_dict().values(), strict=True))
    hint = "pass --spatial_size {trained}"
    loader = CheckpointLoader(str(path), {"model": unet()}, input_grid=[32, 32], grid_hint=hint)
    with pytest.raises(ValueError, match=r"trained on a 64x32 input grid, but this config gives it 32x32; pass "):
        loader(Engine(lambda e, b: None))
    other = CheckpointLoader(str(path), {"model": unet()}, model_identity={**identity, "bundle": "c"})
    with pytest.raises(ValueError, match=r"does not belong to this config.*bundle b \(this config: c\)"):
        other(Engine(lambda e, b: None))
