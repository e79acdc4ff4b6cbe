"""The throughput benchmark (``make bench``) at micro scale: every figure of its table is measured and written."""

from __future__ import annotations

import json

import pytest

from pipelines import bench

RATES = ["trainer_images_per_s", "bare_images_per_s", "engine_images_per_s", "loader_images_per_s"]


def test_throughput_table(tmp_path, capsys):
    assert bench.main(["--out", str(tmp_path), "--iterations", "1", "--xray-cases", "6", "--mri-cases", "3"]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(result["results"]) == {"xray_ap", "mri"}
    for name, row in result["results"].items():
        assert all(row[k] > 0 for k in RATES), name
        assert row["ratio"] == pytest.approx(row["trainer_images_per_s"] / row["bare_images_per_s"])
        assert row["inference_s_per_input"] > 0
        assert row["device"] == "cpu"
    assert result["peak_rss_mb"] > 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "peak RSS" in printed
