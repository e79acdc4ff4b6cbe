"""Two training processes with torchrun on CPU (gloo): training completes, only rank 0 writes, and every rank leaves
the process group together."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from conftest import REPO, small_run_args

from spine_monai.workflow import INPUT_GRID_KEY, end_process_group, run_config_files

AP = REPO / "bundles" / "spine_xray_ap_seg" / "configs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], logs: Path) -> dict[int, str]:
    """``args`` (after ``python -m``) in two gloo processes, which must succeed; each rank's stdout + stderr."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "--log-dir",
        str(logs),
        "--redirects",
        "3",
        "-m",
        *args,
        "--dist_backend",
        "gloo",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    ranks = {int(p.parent.name): p.read_text() for p in logs.rglob("stdout.log")}
    errors = {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}
    assert proc.returncode == 0, (proc.stderr[-2000:], errors)
    assert sorted(ranks) == [0, 1]
    return {r: ranks[r] + errors.get(r, "") for r in ranks}


@pytest.fixture(scope="module")
def gloo_training(xray_root, datalist, tmp_path_factory):
    """Two epochs of the AP bundle's training in two processes: its datalist, output folder and rank logs."""
    base = tmp_path_factory.mktemp("gloo")
    out = base / "out"
    configs = repr([str(AP / "train.json"), str(AP / "multi_gpu_train.json")])
    logs = _torchrun(small_run_args(configs, xray_root, datalist, out, 2), base / "logs")
    return datalist, out, logs


@pytest.mark.slow
def test_two_process_gloo_training_rank_zero_writes(gloo_training):
    _, out, both = gloo_training
    # Both ranks trained (DistributedSampler split the data) ...
    for r in (0, 1):
        assert "Epoch[2] Complete" in both[r], both[r][-1500:]
    # ... but only rank 0 logged metrics and saved checkpoints.
    assert "Metrics -- " in both[0] and "Metrics -- " not in both[1]  # the StatsHandler
    assert "Saved checkpoint" in both[0] and "Saved checkpoint" not in both[1]
    models = sorted(p.name for p in (out / "models").iterdir())
    assert models == ["checkpoint_epoch=2.pt", "model.pt"]
    # The network's own state dict (not DDP's, under ``module.``), with the grid it was trained on.
    model = torch.load(out / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in model) and model._metadata[""][INPUT_GRID_KEY] == [384, 256]
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(events) == 1, events


@pytest.mark.slow
def test_two_process_evaluation_matches_one_process(gloo_training, xray_root, tmp_path):
    datalist, out, _ = gloo_training
    common = [
        "--dataset_dir",
        str(xray_root),
        "--datalist",
        str(datalist),
        "--ckpt_path",
        str(out / "models" / "model.pt"),
    ]
    common += ["--num_workers", "0", "--write_predictions", "False"]
    single = tmp_path / "single"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            repr(run_config_files(AP, "evaluate.json")),
            *common,
            "--output_dir",
            str(single),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=600,
    )
    double = tmp_path / "double"
    configs = repr(run_config_files(AP, "multi_gpu_evaluate.json"))
    _torchrun(
        ["monai.bundle", "run", "--config_file", configs, *common, "--output_dir", str(double)], tmp_path / "logs"
    )
    # Each rank evaluated half the test cases; the metrics gathered on rank 0 cover them all, once each.
    one = pd.read_csv(single / "eval" / "summary.csv")
    two = pd.read_csv(double / "eval" / "summary.csv")
    assert len(one) == 3 and one["cases"].gt(0).all()
    pd.testing.assert_frame_equal(one, two, rtol=1e-5)
    cases = pd.read_csv(double / "eval" / "per_case.csv")
    assert len(cases) == 3 * one["cases"].iloc[0] and cases["patient"].nunique() == one["cases"].iloc[0]


def test_end_process_group_waits_then_destroys(tmp_path):
    assert end_process_group() is False  # nothing initialised: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    assert end_process_group() is True
    assert not dist.is_initialized()


@pytest.mark.parametrize("bundle", ["spine_xray_ap_seg", "spine_xray_lat_seg", "spine_mri_seg", "spine_xray_cls"])
def test_every_multi_process_config_ends_with_the_barrier(bundle):
    # Only the AP training runs under torchrun above; the others must end the same way.
    for name in ("multi_gpu_train.json", "multi_gpu_evaluate.json"):
        finalize = json.loads((REPO / "bundles" / bundle / "configs" / name).read_text())["finalize"]
        assert finalize[-1] == "$spine_monai.workflow.end_process_group()", (bundle, name)
        assert not any("destroy_process_group" in step for step in finalize), (bundle, name)
