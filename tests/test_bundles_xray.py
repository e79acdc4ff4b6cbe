"""The X-ray segmentation bundles through monai.bundle, in-process, on tiny synthetic data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from conftest import REPO, SHARED, assert_training_cache_untouched, raises_in_chain, run_cli, write_dx_dicom
from monai.bundle import ckpt_export, run, verify_metadata, verify_net_in_out
from PIL import Image

from spine_monai.cli import main
from spine_monai.data import build_xray_datalist, read_mask, read_radiograph, write_datalist
from spine_monai.data.layout import STRUCTURES
from spine_monai.errors import DataError, find_data_error
from spine_monai.package import SCHEMA, package_bundle
from spine_monai.workflow import (
    INPUT_GRID_KEY,
    UnknownOverrideError,
    check_model_record,
    load_checkpoint,
    parse_override,
    read_bundle_config,
    run_config_files,
)

BUNDLES = {"AP": REPO / "bundles" / "spine_xray_ap_seg", "LAT": REPO / "bundles" / "spine_xray_lat_seg"}
FAST = {"num_workers": 0, "progress_bar": False, "batch_size": 2}


def _cfg(view, *names):
    files = run_config_files(BUNDLES[view] / "configs", *names)
    return files[0] if len(files) == 1 else files


def _train_one_epoch(view, xray_root, datalist, out, *variants):
    """One epoch of ``view``'s train.json (with ``variants`` merged on top), validated once, into ``out``."""
    run(
        config_file=_cfg(view, "train.json", *variants),
        dataset_dir=str(xray_root),
        datalist=str(datalist),
        fold=0,
        output_dir=str(out),
        val_interval=1,
        **{"train#trainer#max_epochs": 1},
        **FAST,
    )


def _evaluate(view, xray_root, datalist, out, *variants, **overrides):
    """``view``'s evaluate.json (with ``variants``) on the testing list, for the model in ``out``."""
    run(
        config_file=_cfg(view, "evaluate.json", *variants),
        dataset_dir=str(xray_root),
        datalist=str(datalist),
        output_dir=str(out),
        num_workers=0,
        **overrides,
    )


@pytest.fixture(scope="module")
def trained(xray_root, datalist, tmp_path_factory):
    """One epoch of each bundle's real train.json."""
    out = {}
    for view in BUNDLES:
        out[view] = tmp_path_factory.mktemp(f"train_{view}")
        _train_one_epoch(view, xray_root, datalist, out[view])
    return out


@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_train_writes_checkpoints_and_tensorboard(trained, view):
    out = trained[view]
    assert (out / "models" / "model.pt").is_file()
    assert (out / "models" / "checkpoint_epoch=1.pt").is_file()
    state = torch.load(out / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer"} <= set(state)
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"]  # one full epoch
    model = torch.load(out / "models" / "model.pt", weights_only=True)
    assert model._metadata[""][INPUT_GRID_KEY] == [384, 256]  # a plain state dict, with the grid it was trained on
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_evaluate_at_original_resolution(trained, xray_root, datalist, view):
    out = trained[view]
    _evaluate(view, xray_root, datalist, out)
    structures = json.loads((BUNDLES[view] / "configs" / "metadata.json").read_text())["network_data_format"][
        "outputs"
    ]["pred"]["channel_def"].values()
    per_case = pd.read_csv(out / "eval" / "per_case.csv")
    assert list(per_case.columns) == ["patient", "structure", "Dice", "Jaccard", "FP", "FN", "ToleranceDice"]
    assert per_case["patient"].nunique() == 2  # the testing list
    assert list(per_case["structure"].unique()) == list(structures)
    assert per_case[["Dice", "Jaccard", "FP", "FN", "ToleranceDice"]].apply(lambda c: c.between(0, 1).all()).all()
    summary = pd.read_csv(out / "eval" / "summary.csv")
    assert list(summary["structure"]) == list(structures)
    assert {"Dice", "Jaccard", "FP", "FN", "Dice_sd"} <= set(summary.columns)
    patient = per_case["patient"].iloc[0]
    pred_dir = out / "eval" / "predictions" / patient / view
    for s in structures:
        with Image.open(pred_dir / f"{s}.png") as m:
            assert m.mode == "1" and m.size == (384, 576)  # the original size, not the network's
    assert (pred_dir / f"{view}_overlay.png").is_file()
    assert list((out / "tensorboard" / "eval").glob("events.out.tfevents.*"))


def test_evaluation_goes_through_every_case_and_lists_the_bad_ones(trained, xray_copy, datalist, tmp_path):
    doc = json.loads(datalist.read_text())
    good, missing, corrupt = doc["testing"][0], doc["testing"][1], doc["training"][0]
    (xray_copy / missing["Ap_Pedicle"]).unlink()
    jpg = xray_copy / corrupt["AP"]
    jpg.write_bytes(jpg.read_bytes()[:200])
    bad_list = tmp_path / "datalist.json"
    bad_list.write_text(json.dumps({"testing": [missing, good, corrupt]}))
    out = tmp_path / "eval_run"
    shutil.copytree(trained["AP"] / "models", out / "models")
    with raises_in_chain(DataError) as info:
        _evaluate("AP", xray_copy, bad_list, out, write_predictions=False)
    problems = find_data_error(info.value).problems
    assert [p.path for p in problems] == [str(xray_copy / missing["Ap_Pedicle"]), str(jpg)]
    failures = pd.read_csv(out / "eval" / "failures.csv")
    assert list(failures["path"]) == [str(xray_copy / missing["Ap_Pedicle"]), str(jpg)]
    assert "mask file not found" in failures["reason"][0] and "corrupt" in failures["reason"][1]
    assert list(pd.read_csv(out / "eval" / "per_case.csv")["patient"].unique()) == [good["patient"]]


def test_inference_on_a_folder_reports_and_skips_unreadable_images(trained, xray_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(xray_root, data)
    bad = data / "Normal" / "ID (2)" / "AP" / "AP.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    out = tmp_path / "infer"
    shutil.copytree(trained["AP"] / "models", out / "models")
    with raises_in_chain(DataError, match="Normal/ID \\(2\\)/AP/AP.jpg: truncated or corrupt image"):
        run(config_file=_cfg("AP", "inference.json"), dataset_dir=str(data), output_dir=str(out), num_workers=0)
    written = sorted(p.relative_to(out / "predictions").as_posix() for p in (out / "predictions").rglob("*.png"))
    assert len(written) == 7 * 4  # 7 readable patients x (3 masks + overlay)
    assert "Normal/ID (1)/AP/Ap_Pedicle.png" in written and "Normal/ID (1)/AP/AP_overlay.png" in written
    assert not any(w.startswith("Normal/ID (2)/") for w in written)
    failures = pd.read_csv(out / "failures.csv")
    assert len(failures) == 1 and failures["path"].iloc[0].endswith("ID (2)/AP/AP.jpg")
    with Image.open(out / "predictions/Normal/ID (1)/AP/Ap_Vertebra.png") as m:
        assert m.size == (384, 576)


def test_inference_on_a_datalist_and_flat_folder(trained, xray_root, datalist, tmp_path):
    out = tmp_path / "out"
    run(
        config_file=_cfg("LAT", "inference.json"),
        dataset_dir=str(xray_root),
        datalist=str(datalist),
        infer_split="test",
        output_dir=str(out),
        ckpt_path=str(trained["LAT"] / "models" / "model.pt"),
        num_workers=0,
    )
    assert len(list((out / "predictions").rglob("Lat_Anterior_Vertebral_Line.png"))) == 2
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(xray_root / "Normal/ID (1)/LAT/LAT.jpg", flat / "scan_01.jpg")
    run(
        config_file=_cfg("LAT", "inference.json"),
        dataset_dir=str(flat),
        output_dir=str(tmp_path / "o2"),
        ckpt_path=str(trained["LAT"] / "models" / "model.pt"),
        num_workers=0,
    )
    assert (tmp_path / "o2/predictions/scan_01/Lat_Vertebra.png").is_file()
    assert (tmp_path / "o2/predictions/scan_01/scan_01_overlay.png").is_file()


def test_structure_subset_override(xray_root, tmp_path):
    """A dataset with only Ap_Vertebra trains by overriding the structure list; channels follow."""
    dl = tmp_path / "dl.json"
    write_datalist(dl, build_xray_datalist(xray_root, folds=2, views=["AP"], structures=["Ap_Vertebra"]))
    run(
        config_file=_cfg("AP", "train.json"),
        dataset_dir=str(xray_root),
        datalist=str(dl),
        output_dir=str(tmp_path),
        structures=["Ap_Vertebra"],
        val_interval=1,
        **{"train#trainer#max_epochs": 1},
        **FAST,
    )
    parser = read_bundle_config(_cfg("AP", "train.json"))
    parser.update({"structures": ["Ap_Vertebra"]})
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True))
    net.eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 384, 256)).shape == (1, 1, 384, 256)


def test_variants_merge_and_train(xray_root, datalist, tmp_path):
    for variant, cls in (("attention_unet.json", "AttentionUnet"), ("dynunet_deep_supervision.json", "DynUNet")):
        parser = read_bundle_config([_cfg("LAT", "train.json"), _cfg("LAT", variant)])
        net = parser.get_parsed_content("network_def")
        assert type(net).__name__ == cls
        net.eval()
        with torch.no_grad():
            assert net(torch.zeros(1, 1, 384, 256)).shape == (1, 5, 384, 256)
    out = tmp_path / "ds"
    _train_one_epoch("LAT", xray_root, datalist, out, "dynunet_deep_supervision.json")
    _evaluate("LAT", xray_root, datalist, out, "dynunet_deep_supervision.json", write_predictions=False)
    assert (out / "eval" / "summary.csv").is_file()


def test_hires_variant_trains_and_a_model_runs_only_on_its_grid(trained, xray_root, datalist, tmp_path):
    out = tmp_path / "hires"
    _train_one_epoch("LAT", xray_root, datalist, out, "hires.json")
    ckpt = out / "models" / "model.pt"
    assert torch.load(ckpt, weights_only=True)._metadata[""][INPUT_GRID_KEY] == [768, 512]
    _evaluate("LAT", xray_root, datalist, out, "hires.json")
    assert (out / "eval" / "summary.csv").is_file()

    wrong = r"model\.pt: the network was trained on a {} input grid, but this config gives it {}"
    films = {"dataset_dir": str(xray_root), "output_dir": str(tmp_path / "o"), "num_workers": 0}
    with raises_in_chain(ValueError, wrong.format("768x512", "384x256") + r".*configs/hires\.json"):
        run(config_file=_cfg("LAT", "inference.json"), ckpt_path=str(ckpt), **films)
    with raises_in_chain(ValueError, wrong.format("384x256", "768x512")):
        run(config_file=_cfg("LAT", "inference.json", "hires.json"), **{**films, "output_dir": str(trained["LAT"])})
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=r"checkpoint_epoch=1\.pt: the network was trained on a 768x512 input grid"):
        full = out / "models" / "checkpoint_epoch=1.pt"  # the full training checkpoint
        check_model_record(load_checkpoint(full), full, [384, 256])
    plain = _random_weights(tmp_path / "plain.pt", _cfg("LAT", "inference.json"))
    check_model_record(load_checkpoint(plain), plain, [1, 1])  # no record

    with pytest.raises(ValueError, match=wrong.format("768x512", "384x256") + r".*--config.*\[768, 512\]"):
        package_bundle(BUNDLES["LAT"], tmp_path / "dist", ckpt=ckpt)
    zip_path = package_bundle(BUNDLES["LAT"], tmp_path / "dist", ckpt=ckpt, config_files=[_cfg("LAT", "hires.json")])
    with zipfile.ZipFile(zip_path) as zf:
        meta = json.loads(zf.read("spine_xray_lat_seg/configs/metadata.json"))
        assert json.loads(zf.read("spine_xray_lat_seg/configs/inference.json"))["spatial_size"] == [768, 512]
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["spatial_shape"] == fmt["outputs"]["pred"]["spatial_shape"] == [768, 512]


def test_unknown_override_and_missing_datalist_fail_clearly(xray_root, datalist, tmp_path):
    # The overrides of a command line are checked before any data is read.
    with raises_in_chain(UnknownOverrideError, match=r"max_epoch \(did you mean"):
        run_cli(
            config_file=_cfg("AP", "train.json"),
            dataset_dir=str(xray_root),
            datalist=str(datalist),
            output_dir=str(tmp_path),
            max_epoch=3,
        )
    with raises_in_chain(UnknownOverrideError, match="train#max_epochs"):
        run_cli(
            config_file=_cfg("AP", "train.json"),
            dataset_dir=str(xray_root),
            datalist=str(datalist),
            output_dir=str(tmp_path),
            **{"train#max_epochs": 3},
        )
    # Under a _target_ component the argument is checked against its signature before any data is read: a missing
    # datalist would otherwise be the error.
    for key, value, message in [
        ("train#trainer#max_epoch", 3, r"SupervisedTrainer takes no argument 'max_epoch'.*train#trainer#max_epochs"),
        ("network_def#channel", [8, 16], r"UNet takes no argument 'channel'.*network_def#channels"),
    ]:
        with raises_in_chain(UnknownOverrideError, match=message):
            run_cli(config_file=_cfg("AP", "train.json"), dataset_dir=str(tmp_path / "none"), **{key: value})
    # A typo of a top-level key suggests that key first, not its nested namesakes.
    with raises_in_chain(UnknownOverrideError, match=r"batchsize \(did you mean batch_size or"):
        run_cli(config_file=_cfg("AP", "train.json"), dataset_dir=str(tmp_path / "none"), batchsize=4)
    # A component's real argument still passes.
    with raises_in_chain(DataError, match="datalist not found"):
        run(config_file=_cfg("AP", "train.json"), dataset_dir=str(tmp_path / "none"), **{"network_def#dropout": 0.1})
    with raises_in_chain(DataError, match="datalist not found"):
        run(config_file=_cfg("AP", "train.json"), dataset_dir=str(xray_root), output_dir=str(tmp_path))
    with raises_in_chain(FileNotFoundError, match="no model checkpoint found"):
        run(config_file=_cfg("AP", "inference.json"), dataset_dir=str(xray_root), output_dir=str(tmp_path / "none"))


@pytest.mark.parametrize("view", list(BUNDLES))
def test_random_training_transforms_leave_the_cache_alone(view, xray_root, datalist):
    parser = read_bundle_config(_cfg(view, "train.json"))
    parser.update({"dataset_dir": str(xray_root), "datalist": str(datalist), **FAST})
    assert_training_cache_untouched(parser)
    # MONAI's spatial random transforms record themselves on a MetaTensor input; the random part runs untracked
    parser.update({"train#augmentation": [{"_target_": "RandAffined", "keys": "image", "prob": 0.5}]})
    assert_training_cache_untouched(parser)
    # the guard sees a transform that changes its input in place
    parser.update({"train#augmentation": [{"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x.mul_(2)"}]})
    with pytest.raises(AssertionError, match="changed the cached data"):
        assert_training_cache_untouched(parser)


def test_the_two_xray_bundles_share_one_body():
    """One family, two views: every config but the metadata is the family's file; the metadata names the view."""
    common = REPO / "bundles" / "xray_seg_common" / "configs"
    for view, bundle in BUNDLES.items():
        configs = bundle / "configs"
        names = sorted(p.name for p in configs.iterdir() if p.name != "metadata.json")
        assert names == sorted(p.name for p in common.iterdir())
        assert all((configs / n).resolve() == (common / n).resolve() for n in names)
        parser = read_bundle_config(configs / "train.json")
        assert parser.get_parsed_content("view") == view
        assert parser.get_parsed_content("structures") == list(STRUCTURES[view])
        assert parser.get_parsed_content("model_identity")["bundle"] == bundle.name
        assert parser.get_parsed_content("output_dir") == os.path.join("runs", bundle.name)


@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_metadata_and_network_io(view, tmp_path):
    meta = BUNDLES[view] / "configs" / "metadata.json"
    schema = SHARED / "monai" / "meta_schema_20240725.json"
    if not schema.is_file():
        pytest.skip("../shared/monai/meta_schema_20240725.json is not beside the repository")
    verify_metadata(meta_file=str(meta), filepath=str(schema))
    verify_net_in_out(
        net_id="network_def", meta_file=str(meta), config_file=_cfg(view, "inference.json"), device="cpu", n=1
    )
    version = json.loads(meta.read_text())["version"]
    assert version in json.loads(meta.read_text())["changelog"]
    for f in (
        "configs/train.json",
        "configs/evaluate.json",
        "configs/inference.json",
        "configs/logging.conf",
        "docs/README.md",
        "LICENSE",
    ):
        assert (BUNDLES[view] / f).is_file(), f
    assert (BUNDLES[view] / "models").is_dir()


def test_torchscript_export_matches_eager(trained, tmp_path):
    ts = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(trained["LAT"] / "models" / "model.pt"),
        meta_file=str(BUNDLES["LAT"] / "configs" / "metadata.json"),
        config_file=_cfg("LAT", "inference.json"),
        key_in_ckpt="",
    )
    scripted = torch.jit.load(str(ts))
    parser = read_bundle_config(_cfg("LAT", "inference.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(trained["LAT"] / "models" / "model.pt", weights_only=True))
    net.eval()
    x = torch.rand(2, 1, 384, 256)
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), net(x).numpy(), atol=1e-5)


def test_package_runs_standalone_outside_the_repo(trained, xray_root, tmp_path):
    zip_path = package_bundle(BUNDLES["AP"], tmp_path / "dist", ckpt=trained["AP"] / "models" / "model.pt")
    version = json.loads((BUNDLES["AP"] / "configs" / "metadata.json").read_text())["version"]
    assert zip_path.name == f"spine_xray_ap_seg_v{version}.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "elsewhere")
    for f in (
        "configs/metadata.json",
        "configs/inference.json",
        "configs/multi_gpu_train.json",
        "docs/README.md",
        "LICENSE",
        "DATA_LICENSE.txt",
        "models/model.pt",
        "models/model.ts",
    ):
        assert f"spine_xray_ap_seg/{f}" in names, f
    bundle = tmp_path / "elsewhere" / "spine_xray_ap_seg"
    films = tmp_path / "films"
    films.mkdir()
    shutil.copy(xray_root / "Damaged/ID (1)/AP/AP.jpg", films / "patient_a.jpg")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--bundle_root",
            str(bundle),
            "--dataset_dir",
            str(films),
            "--output_dir",
            str(tmp_path / "out"),
            "--num_workers",
            "0",
        ],
        cwd=tmp_path / "elsewhere",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "elsewhere/spine_xray_ap_seg/models/model.pt" in proc.stdout + proc.stderr  # the packaged weights
    assert (tmp_path / "out/predictions/patient_a/Ap_Vertebra.png").is_file()


def test_package_refuses_bad_metadata(trained, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLES["AP"], bundle)
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    meta["version"] = "9.9.9"
    (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 9.9.9 has no entry in 'changelog'"):
        package_bundle(bundle, tmp_path, ckpt=trained["AP"] / "models" / "model.pt")
    del meta["authors"]
    (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match the MONAI bundle schema"):
        package_bundle(bundle, tmp_path, ckpt=trained["AP"] / "models" / "model.pt")
    with pytest.raises(ValueError, match="no trained weights to package"):
        package_bundle(BUNDLES["AP"], tmp_path)


def test_an_override_only_another_config_uses_is_reported_as_ignored(tmp_path, capsys):
    with raises_in_chain(DataError, match="datalist not"):
        run_cli(config_file=_cfg("AP", "train.json"), dataset_dir=str(tmp_path / "none"), tolerance_px=3)
    captured = capsys.readouterr()
    message = "tolerance_px: defined by another config of this bundle, not by train.json; ignored"
    assert message in captured.out + captured.err


def test_a_model_of_another_bundle_or_structure_set_is_refused(trained, xray_root, datalist, tmp_path):
    ap_model = trained["AP"] / "models" / "model.pt"
    recorded = torch.load(ap_model, weights_only=True)._metadata[""]["spine_monai_model"]
    assert recorded == {"bundle": "spine_xray_ap_seg", "inputs": ["AP"], "outputs": list(STRUCTURES["AP"])}
    lat = ["Lat_Vertebra", "Lat_Disk_Height", "Lat_Spinous_Process"]  # as many outputs as the AP model has
    with raises_in_chain(
        ValueError,
        match=r"model\.pt: this model does not belong to this config.*"
        r"bundle spine_xray_ap_seg \(this config: spine_xray_lat_seg\)",
    ):
        run(
            config_file=_cfg("LAT", "inference.json"),
            dataset_dir=str(xray_root),
            output_dir=str(tmp_path / "lat"),
            ckpt_path=str(ap_model),
            structures=lat,
        )
    with raises_in_chain(
        ValueError,
        match=r"outputs \['Ap_Vertebra', 'Ap_Pedicle', 'Ap_Spinous_Process'\] \(this config: \['Ap_Vertebra'\]\)",
    ):
        _evaluate("AP", xray_root, datalist, trained["AP"], structures=["Ap_Vertebra"])
    with pytest.raises(ValueError, match="does not belong to this config"):
        package_bundle(
            BUNDLES["AP"],
            tmp_path / "one.zip",
            ckpt=ap_model,
            schema=SHARED / "monai" / "meta_schema_20240725.json",
            overrides={"structures": ["Ap_Vertebra"]},
        )


def test_package_refuses_a_nested_override_typo(trained, tmp_path):
    with pytest.raises(UnknownOverrideError, match="SupervisedTrainer takes no argument 'max_epoch'"):
        package_bundle(
            BUNDLES["AP"],
            tmp_path / "typo.zip",
            ckpt=trained["AP"] / "models" / "model.pt",
            schema=SHARED / "monai" / "meta_schema_20240725.json",
            overrides={"train#trainer#max_epoch": 4},
        )
    assert not (tmp_path / "typo.zip").exists()


def test_overrides_are_read_as_monai_bundle_reads_them():
    assert parse_override("spatial_size=[256, 160]") == ("spatial_size", [256, 160])
    assert parse_override("network_def#_target_=AttentionUnet") == ("network_def#_target_", "AttentionUnet")
    assert parse_override("progress_bar=False") == ("progress_bar", False)
    assert parse_override("learning_rate=5e-4") == ("learning_rate", 5e-4)
    assert parse_override("ckpt_path=/a/b=c.pt") == ("ckpt_path", "/a/b=c.pt")
    for bad in ("structures", "=3", " =3"):
        with pytest.raises(ValueError, match="is not KEY=VALUE"):
            parse_override(bad)


def test_package_exports_onnx_that_matches_eager(trained, tmp_path):
    import onnxruntime

    ckpt = trained["AP"] / "models" / "model.pt"
    zip_path = package_bundle(BUNDLES["AP"], tmp_path / "dist", ckpt=ckpt, onnx=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "x")
    bundle = tmp_path / "x" / "spine_xray_ap_seg"
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    packaged = meta["packaged"]
    assert packaged["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert set(packaged["export_max_abs_diff"]) == {"torchscript", "onnx"}
    verify_metadata(meta_file=str(bundle / "configs/metadata.json"), filepath=str(SCHEMA))
    parser = read_bundle_config(_cfg("AP", "inference.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    net.eval()
    x = torch.rand(3, 1, 384, 256, generator=torch.Generator().manual_seed(1))  # another batch size than the export's
    session = onnxruntime.InferenceSession(str(bundle / "models/model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], net(x).numpy(), atol=1e-3)


def _random_weights(path, *config_files, **overrides):
    parser = read_bundle_config([str(f) for f in config_files])
    parser.update(overrides)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def test_package_bakes_the_variant_and_overrides_a_model_was_trained_with(xray_root, tmp_path):
    configs = BUNDLES["AP"] / "configs"
    variant = configs / "attention_unet.json"
    ckpt = _random_weights(tmp_path / "attention.pt", configs / "inference.json", variant)
    with pytest.raises(ValueError, match=r"attention\.pt: the weights do not fit the bundle's network_def \(UNet\)"):
        package_bundle(BUNDLES["AP"], tmp_path, ckpt=ckpt)
    with pytest.raises(UnknownOverrideError, match=r"- num_worker \(did you mean "):
        package_bundle(BUNDLES["AP"], tmp_path, ckpt=ckpt, config_files=[variant], overrides={"num_worker": 0})

    overrides = {"num_workers": 0, "train#trainer#max_epochs": 7}
    zip_path = package_bundle(BUNDLES["AP"], tmp_path / "dist", ckpt=ckpt, config_files=[variant], overrides=overrides)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "x")
    bundle = tmp_path / "x" / "spine_xray_ap_seg"
    inference = json.loads((bundle / "configs/inference.json").read_text())
    train = json.loads((bundle / "configs/train.json").read_text())
    # evaluate.json, an overlay, evaluates train.json's network as the runner merges them.
    evaluate = read_bundle_config(run_config_files(bundle / "configs", "evaluate.json")).get()
    assert {c["network_def"]["_target_"] for c in (inference, train, evaluate)} == {"AttentionUnet"}
    assert inference["num_workers"] == train["num_workers"] == evaluate["num_workers"] == 0
    assert train["train"]["trainer"]["max_epochs"] == 7
    assert "train#trainer#max_epochs" not in json.loads((bundle / "configs/evaluate.json").read_text())
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert meta["packaged"]["config_files"] == ["attention_unet.json"] and meta["packaged"]["overrides"] == overrides

    films = tmp_path / "films"
    films.mkdir()
    shutil.copy(xray_root / "Normal/ID (1)/AP/AP.jpg", films / "patient_b.jpg")
    run(
        config_file=str(bundle / "configs/inference.json"),
        bundle_root=str(bundle),
        dataset_dir=str(films),
        output_dir=str(tmp_path / "out"),
    )
    assert (tmp_path / "out/predictions/patient_b/Ap_Vertebra.png").is_file()


def test_package_refuses_a_model_the_metadata_does_not_describe(tmp_path, capsys):
    configs = BUNDLES["AP"] / "configs"
    ckpt = _random_weights(tmp_path / "one.pt", configs / "inference.json", structures=["Ap_Vertebra"])
    args = ["package", str(BUNDLES["AP"]), "--ckpt", str(ckpt), "--out", str(tmp_path / "dist")]
    assert main([*args, "--override", "structures=['Ap_Vertebra']"]) == 2
    assert "network_data_format says 3 output channels, the network gives 1" in capsys.readouterr().err
    assert main([*args, "--override", "structure=['Ap_Vertebra']"]) == 2
    assert "- structure (did you mean" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--override", "structures"])
    assert "override 'structures' is not KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "dist").exists()


def test_inference_on_a_dicom_film_writes_a_segmentation_beside_the_masks(trained, xray_root, tmp_path):
    import highdicom

    films = tmp_path / "films"
    films.mkdir()
    image = read_radiograph(xray_root / "Normal" / "ID (2)" / "AP" / "AP.jpg")
    film = write_dx_dicom(films / "patient_d.dcm", image / image.max() * 4000, view="AP")
    out = tmp_path / "out"
    ckpt = trained["AP"] / "models" / "model.pt"
    run(config_file=_cfg("AP", "inference.json"), dataset_dir=str(films), output_dir=str(out), ckpt_path=str(ckpt))
    folder = out / "predictions" / "patient_d"
    seg = highdicom.seg.segread(folder / "patient_d_seg.dcm")
    source = pydicom.dcmread(film)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=False)[0]
    for number, name in enumerate(STRUCTURES["AP"], start=1):
        assert seg.get_segment_description(number).segment_label == name
        assert np.array_equal(pixels[..., number - 1], read_mask(folder / f"{name}.png") != 0), name
