"""Two training processes with torchrun on CPU (gloo): training completes and only rank 0 writes."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from conftest import REPO, small_run_args

from spine_monai.data import build_xray_datalist, write_datalist

AP = REPO / "bundles" / "spine_xray_ap_seg" / "configs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("workflow", ["train"])
def test_two_process_gloo_training_rank_zero_writes(xray_root, tmp_path, workflow):
    datalist = tmp_path / "datalist.json"
    write_datalist(datalist, build_xray_datalist(xray_root, folds=2, test_fraction=0.25, seed=0))
    out, logs = tmp_path / "out", tmp_path / "logs"
    configs = repr([str(AP / "train.json"), str(AP / "multi_gpu_train.json")])
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
        *small_run_args(configs, xray_root, datalist, out, 2, "--dist_backend", "gloo"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    rank_logs = {int(p.parent.name): p.read_text() for p in logs.rglob("stdout.log")}
    rank_logs_err = {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}
    assert proc.returncode == 0, (proc.stderr[-2000:], rank_logs_err)
    assert sorted(rank_logs) == [0, 1]
    both = {r: rank_logs[r] + rank_logs_err.get(r, "") for r in rank_logs}
    # Both ranks trained (DistributedSampler split the data) ...
    for r in (0, 1):
        assert "Epoch[2] Complete" in both[r], both[r][-1500:]
    # ... but only rank 0 logged metrics and saved checkpoints.
    assert "Metrics -- " in both[0] and "Metrics -- " not in both[1]  # the StatsHandler
    assert "Saved checkpoint" in both[0] and "Saved checkpoint" not in both[1]
    models = sorted(p.name for p in (out / "models").iterdir())
    assert models == ["checkpoint_epoch=2.pt", "model.pt"]
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(events) == 1, events
