"""The throughput benchmark (``make bench``) at micro scale: every figure of its table is measured and written."""

from __future__ import annotations

import json
import statistics
import time

import pytest
import torch
from PIL import Image

from pipelines import bench

RATES = ["trainer_images_per_s", "bare_images_per_s", "engine_images_per_s", "loader_images_per_s"]


def test_bare_loop_between_trainer_blocks(tmp_path, monkeypatch):
    """The bare loop runs as many steps as the trainer's measured iterations, in blocks between them, and its time
    is not counted as the trainer's."""
    bench._synthetic(tmp_path, "xray", 4, bench.write_xray_dataset, bench.build_xray_datalist)
    overrides = {
        "dataset_dir": str(tmp_path / "xray"),
        "datalist": str(tmp_path / "xray_datalist.json"),
        "output_dir": str(tmp_path / "run"),
        "progress_bar": False,
        "batch_size": 1,
        "spatial_size": [64, 32],
    }
    blocks: list[int] = []
    run = bench.BareLoop.run

    def recording(self, steps):
        blocks.append(steps)
        seconds = run(self, steps)
        time.sleep(1.0)
        return seconds

    monkeypatch.setattr(bench.BareLoop, "run", recording)
    trainer, bare = bench.trainer_rate(bench._parser("spine_xray_ap_seg", "train.json", overrides), 5, bare_block=2)
    assert blocks == [2, 2, 1]
    # two of the blocks (and their 1 s sleeps) fall between measured iterations: their time is not the trainer's
    assert trainer > 0 and bare > 0 and 5 / trainer < 2.0


@pytest.mark.slow
def test_throughput_table(tmp_path, capsys):
    films = ["--film-cases", "2", "--film-size", "256x384"]
    args = ["--out", str(tmp_path), "--iterations", "1", "--rounds", "2", "--xray-cases", "6", "--mri-cases", "3"]
    assert bench.main([*args, *films]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(result["results"]) == {"xray_ap", "mri"}
    # the AP bundle's inference at the films' size too, on films of that size
    assert result["film_size"] == [256, 384] and result["results"]["xray_ap"]["inference_s_per_film_full_size"] > 0
    masks = sorted((tmp_path / "xray_films_inference" / "predictions").rglob("Ap_Vertebra.png"))
    assert len(masks) == 2 and all(Image.open(m).size == (256, 384) for m in masks)
    assert all(row["variant"] == "default" and row["overrides"] == {} for row in result["results"].values())
    for name, row in result["results"].items():
        assert all(row[k] > 0 for k in RATES), name
        assert len(row["ratio_rounds"]) == 2 and row["rounds"] == 2
        assert row["ratio_rounds"] == pytest.approx([t / b for t, b in zip(row["trainer_rounds"], row["bare_rounds"])])
        assert min(row["ratio_rounds"]) <= row["ratio"] <= max(row["ratio_rounds"])
        assert row["engine_ratio_rounds"] == pytest.approx(
            [e / b for e, b in zip(row["engine_rounds"], row["engine_bare_rounds"])]
        )
        assert row["inference_s_per_input"] > 0 and row["augment_ms_per_batch"] > 0
        assert row["device"] == "cpu"
        assert row["epoch_batches"] >= 1
    assert result["peak_rss_mb"] > 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "peak RSS" in printed
    # a handful of cases cannot fill the measured iterations with one epoch; the table says so
    assert "fewer than the 4 measured" in printed
    # the generated set is reused only at the size it was made with
    with pytest.raises(SystemExit, match="holds a set made with"):
        bench.main([*args[:-4], "--xray-cases", "7", "--mri-cases", "3"])
    with pytest.raises(SystemExit):
        bench.main([*args, "--film-cases", "1"])
    assert "0 or at least 2" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_option_rows(tmp_path, capsys):
    """Each variant trains with its own overrides and gets its own row, without inference (the default row's)."""
    args = ["--out", str(tmp_path), "--iterations", "1", "--rounds", "1", "--xray-cases", "6", "--mri-cases", "3"]
    options = [v for v in bench.VARIANTS if v != "default"]
    assert bench.main([*args, "--variants", *options]) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert set(rows) == {f"{k}+{v}" for k in ("xray_ap", "mri") for v in options}
    for name, row in rows.items():
        assert row["overrides"] == bench.VARIANTS[row["variant"]], name
        assert all(row[k] > 0 for k in RATES), name
        assert row["inference_s_per_input"] is None, name
    assert "xray+channels_last" in capsys.readouterr().out


@pytest.mark.slow
def test_layout_pairs_alternate_the_two_layouts(tmp_path, monkeypatch, capsys):
    """Each network is timed in both layouts, in pairs whose order alternates, and the speed-ups are those pairs'."""
    from pipelines import bench_layout

    layouts: list[str] = []
    run = bench.BareLoop.run

    def recording(self, steps):
        convs = [m.weight for m in self.network.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1]
        nhwc = all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
        layouts.append("channels_last" if nhwc else "channels_first")
        return run(self, steps)

    monkeypatch.setattr(bench.BareLoop, "run", recording)
    sets = ["--out", str(tmp_path), "--xray-cases", "6", "--mri-cases", "3"]
    args = [*sets, "--pairs", "3", "--steps", "1", "--networks", "xray", "mri", "cls_vertebra"]
    assert bench_layout.main(args) == 0
    first, last = "channels_first", "channels_last"
    per_network = [first, last, first, last, last, first, first, last]  # warm-up, then 3 alternating pairs
    assert layouts == per_network * 3
    rows = json.loads((tmp_path / "layout.json").read_text())["results"]
    assert set(rows) == {"xray", "mri", "cls_vertebra"}
    assert rows["cls_vertebra"]["bundle"] == "spine_xray_cls"
    for row in rows.values():
        assert len(row["speedups"]) == 3 and row["speedup"] == statistics.median(row["speedups"])
        assert row["channels_last_faster"] == sum(r > 1 for r in row["speedups"])
        assert row["channels_first_step_s"] > 0 and row["batch"] >= 1
    assert "channels last x" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_layout.main([*args, "--ap-variants", "no_such_variant.json"])
    with pytest.raises(SystemExit):
        bench_layout.main([*sets, "--networks", "no_such_network"])


def test_layout_steps_default_to_about_a_second(tmp_path, monkeypatch):
    """Without --steps a network gets as many steps a block as its pace after the warm-up fits in a second."""
    from pipelines import bench_layout

    calls: list[int] = []

    def paced(self, steps):
        calls.append(steps)
        return 0.3 * steps

    monkeypatch.setattr(bench.BareLoop, "run", paced)
    args = ["--out", str(tmp_path), "--xray-cases", "6", "--mri-cases", "3", "--pairs", "2", "--networks", "xray"]
    assert bench_layout.main(args) == 0
    # Two warm-ups, one step to pace, then 2 pairs of round(1.0 / 0.3) = 3 steps each layout.
    assert calls == [bench_layout.WARMUP_STEPS] * 2 + [1] + [3] * 4
    row = json.loads((tmp_path / "layout.json").read_text())["results"]["xray"]
    assert row["steps"] == 3 and row["channels_first_step_s"] == pytest.approx(0.3)


def test_xray_benchmark_refuses_a_set_of_another_size(tmp_path, capsys):
    """``bench_xray --size`` measures films of that size: a set made at another size is refused, not reused."""
    from pipelines import bench_xray

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ground_truth.json").write_text(json.dumps({"size": [384, 576], "cases": {}}))
    with pytest.raises(SystemExit):
        bench_xray.main(["--out", str(tmp_path), "--size", "1900x2900"])
    assert "holds films of 384x576, not 1900x2900" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_xray.main(["--out", str(tmp_path), "--size", "2900x1900"])
    assert "landscape" in capsys.readouterr().err
