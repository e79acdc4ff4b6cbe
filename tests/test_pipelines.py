"""The experiment pipelines at micro scale: their tables, the run markers, and ``--resume`` skipping finished runs.

Every experiment runs on the 8-patient ``xray_root`` (2 folds of 3, 2 testing) for 1 epoch at 192x128. The k-fold
test launches the bundles as child processes, as the pipelines do by default; the others use ``--in-process``
(``monai.bundle.run`` here), which saves the ~10 s each child spends importing torch and MONAI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from pipelines import architectures, experiment, kfold, noise, train_size
from pipelines.__main__ import main as pipelines_main
from pipelines.registry import EXPERIMENTS, PIPELINES
from spine_monai.cli import build_parser
from spine_monai.data import build_mri_datalist, read_datalist, write_datalist
from spine_monai.synthetic.mri import write_mri_dataset

MICRO = ["--epochs", "1", "-o", "spatial_size=[192,128]", "-o", "batch_size=2", "-o", "num_workers=0"]
MICRO += ["-o", "val_interval=1"]
AP = ["Ap_Vertebra", "Ap_Pedicle", "Ap_Spinous_Process"]
XRAY_METRICS = ["cases", "Dice", "Jaccard", "ToleranceDice", "FP", "FN"]


@pytest.fixture(scope="module")
def data(xray_root, datalist) -> list[str]:
    """The arguments that point an experiment at ``xray_root`` and a 2-fold datalist with 2 testing patients."""
    return ["--dataset-dir", str(xray_root), "--datalist", str(datalist)]


@pytest.fixture
def launches(monkeypatch) -> list[tuple[str, dict]]:
    """Every bundle launch, as (log file name, overrides), while still running it."""
    seen: list[tuple[str, dict]] = []

    def spy(real):
        def launch(configs, overrides, log, bar=None):
            seen.append((Path(log).name, dict(overrides)))
            return real(configs, overrides, log, bar)

        return launch

    monkeypatch.setattr(experiment, "launch_child", spy(experiment.launch_child))
    monkeypatch.setattr(experiment, "launch_in_process", spy(experiment.launch_in_process))
    return seen


@pytest.mark.slow
def test_kfold_in_child_processes_then_resume(data, tmp_path, launches):
    out = tmp_path / "kfold"
    assert kfold.main([*data, *MICRO, "--out", str(out)]) == 0
    assert [name for name, _ in launches] == ["train.log", "evaluate_validation.log"] * 2
    assert [o["fold"] for _, o in launches] == [0, 0, 1, 1]
    assert all(o["eval_split"] == "validation" for name, o in launches if name.startswith("evaluate"))

    per_fold = pd.read_csv(out / "per_fold.csv")
    assert list(per_fold.columns) == ["fold", "structure", *XRAY_METRICS]
    assert sorted(zip(per_fold["fold"], per_fold["structure"])) == sorted((k, s) for k in (0, 1) for s in AP)
    assert (per_fold["cases"] == 3).all()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["structure"]) == [*AP, "mean"]
    assert (summary["folds"] == 2).all()
    assert {"Dice_mean", "Dice_sd", "Jaccard_mean", "ToleranceDice_sd"} <= set(summary.columns)
    assert summary["Dice_mean"].between(0, 1).all()
    md = (out / "summary.md").read_text()
    assert "| structure | folds | Dice |" in md and "| mean | 2 |" in md
    assert (out / "kfold.png").stat().st_size > 0

    config = json.loads((out / "experiment.json").read_text())
    assert config["arguments"]["epochs"] == 1 and config["runner"].startswith("child")
    assert "--eval_split validation --fold 1" in config["runs"]["fold1"]["evaluate"]["validation"]
    for k in (0, 1):
        run = out / f"fold{k}"
        # The child's output was read as it came: the bar saw the epoch and the log holds the full output.
        assert json.loads((run / "train_done.json").read_text())["epochs_logged"] == 1
        assert "Epoch[1] Metrics" in (run / "train.log").read_text()
        assert (run / "done.json").is_file() and (run / "models" / "model.pt").is_file()
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    # A second invocation finds every run finished and launches nothing.
    launches.clear()
    stamp = (out / "fold0" / "done.json").stat().st_mtime_ns
    assert kfold.main(["--out", str(out), "--resume"]) == 0
    assert launches == []
    assert (out / "fold0" / "done.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_csv(out / "per_fold.csv"), per_fold)

    # An interrupted run (a checkpoint, no markers) resumes its training from the checkpoint, then evaluates.
    (out / "fold1" / "done.json").unlink()
    (out / "fold1" / "train_done.json").unlink()
    assert kfold.main(["--out", str(out), "--resume", "--in-process"]) == 0
    assert [name for name, _ in launches] == ["train.log", "evaluate_validation.log"]
    assert launches[0][1]["resume"] is True and launches[0][1]["fold"] == 1
    assert "resume" not in launches[1][1]


def test_noise_two_by_two(data, tmp_path, launches):
    out = tmp_path / "noise"
    args = [*data, *MICRO, "--out", str(out), "--in-process"]
    assert noise.main([*args, "--sigma", "5000", "--bit-depth", "16"]) == 0
    std = 5000 / 65535
    trains = [o for name, o in launches if name == "train.log"]
    assert [o["noise_std"] for o in trains] == [0.0, std]
    evals = {(o["output_dir"].name, name): o["noise_std"] for name, o in launches if name != "train.log"}
    assert evals == {
        (f"train_{t}", f"evaluate_{e}.log"): std if e == "noisy" else 0.0
        for t in ("clean", "noisy")
        for e in ("clean", "noisy")
    }

    table = pd.read_csv(out / "table_2x2.csv", index_col=0)
    assert list(table.index) == ["train clean", "train noisy"]
    assert list(table.columns) == ["eval clean", "eval noisy"]
    assert table.notna().all().all() and ((table > 0) & (table < 1)).all().all()
    per_structure = pd.read_csv(out / "per_structure.csv")
    assert list(per_structure.columns) == ["training", "evaluation", "structure", *XRAY_METRICS]
    assert len(per_structure) == 2 * 2 * len(AP)
    clean = per_structure[(per_structure["training"] == "clean") & (per_structure["evaluation"] == "clean")]
    assert table.loc["train clean", "eval clean"] == pytest.approx(clean["Dice"].mean(), abs=1e-4)
    assert (out / "noise.png").stat().st_size > 0
    assert (out / "train_noisy" / "eval_noisy" / "summary.csv").is_file()

    launches.clear()
    assert noise.main(["--out", str(out), "--resume", "--in-process"]) == 0
    assert launches == []


def test_train_size_learning_curve(data, tmp_path, launches):
    out = tmp_path / "train_size"
    assert (
        train_size.main([*data, *MICRO, "--sizes", "1", "2", "--repeats", "1", "--out", str(out), "--in-process"]) == 0
    )
    assert len([1 for name, _ in launches if name == "train.log"]) == 2

    source = read_datalist(data[3])
    for size in (1, 2):
        sub = read_datalist(out / f"n{size:03d}_r0" / "datalist.json")
        train = [r for r in sub["training"] if r["fold"] != 0]
        validation = [r for r in sub["training"] if r["fold"] == 0]
        assert len(train) == size
        assert validation == [r for r in source["training"] if r["fold"] == 0]
        assert sub["testing"] == source["testing"]
    small = {r["patient"] for r in read_datalist(out / "n001_r0" / "datalist.json")["training"]}
    assert small <= {r["patient"] for r in read_datalist(out / "n002_r0" / "datalist.json")["training"]}

    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns[:6]) == ["run", "size", "repeat", "seed", "epochs", "structure"]
    assert len(runs) == 2 * (len(AP) + 1)
    assert sorted(set(runs["structure"])) == sorted([*AP, "mean"])
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["size", "structure", "runs", "Dice_mean", "Dice_sd"]
    assert sorted(zip(summary["size"], summary["structure"])) == sorted((n, s) for n in (1, 2) for s in [*AP, "mean"])
    assert (summary["runs"] == 1).all() and summary["Dice_sd"].isna().all()  # one repeat: no sd
    assert (out / "train_size.png").stat().st_size > 0

    launches.clear()
    assert train_size.main(["--out", str(out), "--resume", "--in-process"]) == 0
    assert launches == []


def test_subsample_is_nested_and_bounded(data):
    source = read_datalist(data[3])
    small, large = (train_size.subsample(source, n, fold=0, seed=4) for n in (1, 3))
    assert {r["patient"] for r in small["training"]} <= {r["patient"] for r in large["training"]}
    assert small["subsample"] == {"size": 1, "pool": 3, "validation_fold": 0, "seed": 4}
    with pytest.raises(ValueError, match="between 1 and the 3 records"):
        train_size.subsample(source, 4, fold=0, seed=4)


def test_architectures_table(data, tmp_path, launches):
    out = tmp_path / "architectures"
    args = [*data, *MICRO, "--architectures", "unet", "segresnet", "--out", str(out), "--in-process"]
    assert architectures.main(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["architecture", "parameters", "train_images_per_s", "train_min", *AP, "mean Dice"]
    assert list(summary["architecture"]) == ["UNet", "SegResNet"]
    assert (summary["parameters"] > 0).all() and summary["parameters"].nunique() == 2
    assert (summary["train_images_per_s"] > 0).all()
    assert summary["mean Dice"].tolist() == pytest.approx(summary[AP].mean(axis=1).tolist(), abs=1e-4)
    per_structure = pd.read_csv(out / "per_structure.csv")
    assert list(per_structure.columns) == ["architecture", "structure", *XRAY_METRICS]
    train_configs = [o for name, o in launches if name == "train.log"]
    assert len(train_configs) == 2
    assert "segresnet.json" in json.loads((out / "experiment.json").read_text())["runs"]["segresnet"]["train"]

    launches.clear()
    assert architectures.main(["--out", str(out), "--resume", "--in-process"]) == 0
    assert launches == []


def test_parameter_counts_of_every_variant():
    counts = {
        name: experiment.count_parameters("spine_xray_ap_seg", variant)
        for name, (variant, _) in architectures.ARCHITECTURES.items()
    }
    assert counts["unet"] == 661_787  # the bundle's UNet: 16-256 channels, 3 outputs
    assert len(set(counts.values())) == 4
    # An override reaches network_def: one structure fewer, one output channel fewer.
    fewer = experiment.count_parameters("spine_xray_ap_seg", None, {"structures": AP[:2], "batch_size": 2})
    assert fewer < counts["unet"]
    assert architectures.available("spine_mri_seg") == ["unet", "attention_unet"]


def test_mri_kfold(tmp_path, launches):
    root = tmp_path / "mri"
    write_mri_dataset(root, cases=4, seed=2, shape=(6, 64, 64), workers=1)
    datalist = tmp_path / "datalist.json"
    write_datalist(datalist, build_mri_datalist(root, folds=2, test_fraction=0.0, seed=0))
    out = tmp_path / "kfold_mri"
    args = ["--bundle", "spine_mri_seg", "--dataset-dir", str(root), "--datalist", str(datalist), "--epochs", "1"]
    args += ["-o", "patch_size=[64,64]", "-o", "val_interval=1", "--out", str(out), "--in-process"]
    assert kfold.main(args) == 0
    per_fold = pd.read_csv(out / "per_fold.csv")
    assert list(per_fold.columns) == ["fold", "class", "cases", "Dice", "IoU", "FP", "FN"]
    summary = pd.read_csv(out / "summary.csv")
    assert summary["class"].iloc[-1] == "mean (no background)" and len(summary) == 13
    # The small MRI setting's overrides went to the commands whose configs define them: evaluation merges
    # train.json (so it takes the training keys too), training does not merge evaluate.json.
    train = next(o for name, o in launches if name == "train.log")
    evaluation = next(o for name, o in launches if name != "train.log")
    assert train["in_plane_spacing"] == [3.0, 3.0] and train["slices_per_volume"] == 2
    assert "write_predictions" not in train and evaluation["write_predictions"] is False
    assert evaluation["in_plane_spacing"] == [3.0, 3.0]


def test_folder_and_override_errors(data, tmp_path):
    with pytest.raises(SystemExit, match="no experiment.json to resume"):
        kfold.main(["--out", str(tmp_path / "none"), "--resume"])
    with pytest.raises(SystemExit, match=r"spine_xray_ap_seg: unknown config key.*\n  - max_epoch \(did you mean"):
        kfold.main([*data, "-o", "max_epoch=3", "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match=r"fold \(set by"):
        noise.main([*data, "-o", "fold=1", "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="needs --dataset-dir"):
        noise.main(["--datalist", data[3], "--out", str(tmp_path / "c")])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "experiment.json").write_text("{}")
    with pytest.raises(SystemExit, match="add --resume"):
        kfold.main([*data, "--out", str(tmp_path / "d")])


def test_resume_finds_the_latest_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "RUNS", tmp_path)
    with pytest.raises(SystemExit, match="no earlier experiment"):
        experiment._experiment_folder("noise", None, resume=True)
    for stamp in ("20261123-101500", "20261123-093000", "20261123-110000"):
        (tmp_path / "noise" / stamp).mkdir(parents=True)
    (tmp_path / "noise" / "20261123-101500" / "experiment.json").write_text("{}")
    (tmp_path / "noise" / "20261123-093000" / "experiment.json").write_text("{}")
    # The newest folder that holds an experiment; 11:00 never got as far as writing one.
    assert experiment._experiment_folder("noise", None, resume=True) == tmp_path / "noise" / "20261123-101500"
    new = experiment._experiment_folder("noise", None, resume=False)
    assert new.parent == tmp_path / "noise" and not new.exists()


def test_failed_bundle_stops_with_its_log(data, tmp_path, capsys):
    out = tmp_path / "failing"
    # A LAT structure in the AP bundle: the bundle itself rejects it when it reads the records.
    args = [*data, *MICRO, "-o", "structures=['Ap_Vertebra','Lat_Vertebra']", "--out", str(out), "--in-process"]
    assert noise.main(args) == 1
    assert "see " + str(out / "train_clean" / "train.log") in capsys.readouterr().out
    assert "do not belong to the AP view" in (out / "train_clean" / "train.log").read_text()
    assert not (out / "train_clean" / "done.json").exists()


def test_training_log_throughput(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "# 2026-11-23T10:00:00 (child process) $ python -m monai.bundle run ...\n"
        "x - ignite.engine.engine.SupervisedEvaluator - INFO - Engine run finished. Time taken: 00:00:02.500\n"
        "x - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[1] Complete. Time taken: 00:00:10.000\n"
        "x - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[2] Complete. Time taken: 00:01:00.000\n"
        "# 2026-11-23T10:05:00 (child process) $ python -m monai.bundle run ... --resume True\n"
        "x - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[2] Complete. Time taken: 00:00:08.000\n"
    )
    # Epoch 2 was redone after a resume: its last time counts, once; the validation inside epoch 1 is left out.
    assert experiment.parse_training_log(log) == experiment.TrainingStats(epochs=2, seconds=15.5)


def test_registry_and_markdown(capsys):
    # The studies run from a checkout (python -m pipelines), not from the installed spine-monai.
    assert "experiment" not in build_parser()._subparsers._group_actions[0].choices
    assert set(EXPERIMENTS) <= set(PIPELINES)
    for name in PIPELINES:
        assert (REPO / "pipelines" / f"{name}.py").is_file(), name
    assert pipelines_main(["--help"]) == 0 and "kfold" in capsys.readouterr().out
    assert pipelines_main(["nope"]) == 2 and "no pipeline 'nope'" in capsys.readouterr().err
    assert pipelines_main(["config_counts"]) == 0
    assert "spine_xray_ap_seg/train.json" in capsys.readouterr().out
    table = experiment.markdown_table(pd.DataFrame({"structure": ["a"], "Dice": [0.81234], "n": [3]}))
    assert table.splitlines() == ["| structure | Dice | n |", "| --- | ---: | ---: |", "| a | 0.812 | 3 |"]
    assert (REPO / "pipelines" / "README.md").is_file()


def test_a_failed_bundle_run_is_one_line_and_exit_status_1(capsys):
    @experiment.reports_bundle_failure
    def main(argv=None):
        raise experiment.BundleFailed("training failed; see runs/x/train.log")

    assert main([]) == 1
    assert capsys.readouterr().out.strip() == "error: training failed; see runs/x/train.log"
    assert kfold.main.__wrapped__.__name__ == "main"


def test_bench_cls_predicts_masks_once_per_set_of_checkpoints(tmp_path, monkeypatch):
    from pipelines import bench_cls

    ckpts = {"AP": tmp_path / "ap.pt", "LAT": tmp_path / "lat.pt"}
    with pytest.raises(SystemExit, match="make bench-xray"):
        bench_cls._predicted_masks(tmp_path, tmp_path / "data", ckpts)
    for path in ckpts.values():
        path.write_bytes(b"")
    runs = []
    monkeypatch.setattr(bench_cls, "run_bundle", lambda configs, overrides, log: runs.append((configs[0], overrides)))
    masks = bench_cls._predicted_masks(tmp_path, tmp_path / "data", ckpts)
    assert masks == tmp_path / "masks" / "predictions"
    assert [Path(c).parts[-3] for c, _ in runs] == ["spine_xray_ap_seg", "spine_xray_lat_seg"]
    assert [o["ckpt_path"] for _, o in runs] == [ckpts["AP"], ckpts["LAT"]]
    bench_cls._predicted_masks(tmp_path, tmp_path / "data", ckpts)
    assert len(runs) == 2  # the same checkpoints: reused
    bench_cls._predicted_masks(tmp_path, tmp_path / "data", {"AP": ckpts["LAT"], "LAT": ckpts["AP"]})
    assert len(runs) == 4  # other checkpoints: predicted again
