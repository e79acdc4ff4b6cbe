"""The dual-view classification bundle, its network, data helpers and metrics, in-process on tiny synthetic data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, SHARED, raises_in_chain
from monai.bundle import ConfigParser, ckpt_export, run, verify_metadata, verify_net_in_out
from monai.metrics import compute_roc_auc
from monai.transforms import Compose
from PIL import Image

import spine_monai
from spine_monai.data import write_datalist
from spine_monai.data.classification import (
    class_weights,
    cls_inference_inputs,
    cls_records,
    image_keys,
    view_channels,
    weighted_sampler,
)
from spine_monai.errors import DataError
from spine_monai.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    roc_auc,
    roc_curve,
)
from spine_monai.networks import DualViewClassifier, build_encoder
from spine_monai.package import package_bundle
from spine_monai.transforms import view_augmentations
from spine_monai.workflow import INPUT_GRID_KEY, read_bundle_config, run_config_files

BUNDLE = REPO / "bundles" / "spine_xray_cls"
# Small films and the lightest backbone keep the bundle runs to seconds on two CPU cores.
FAST = {"num_workers": 0, "progress_bar": False, "spatial_size": [192, 128], "backbone": "resnet18"}
FILM_SIZE = (384, 576)  # (W, H) of the synthetic films


def _cfg(name: str) -> str | list[str]:
    files = run_config_files(BUNDLE / "configs", name)
    return files[0] if len(files) == 1 else files


def _parser(name: str, **overrides) -> ConfigParser:
    parser = read_bundle_config(_cfg(name))
    parser.read_meta(_cfg("metadata.json"))
    parser.update(overrides)
    return parser


@pytest.fixture(scope="module")
def trained(xray_root, datalist, tmp_path_factory):
    """One epoch of the real train.json."""
    out = tmp_path_factory.mktemp("cls_train")
    run(
        config_file=_cfg("train.json"),
        dataset_dir=str(xray_root),
        datalist=str(datalist),
        fold=0,
        output_dir=str(out),
        val_interval=1,
        batch_size=2,
        **{"train#trainer#max_epochs": 1},
        **FAST,
    )
    return out


def test_train_writes_checkpoints_and_tensorboard(trained):
    assert (trained / "models" / "model.pt").is_file()
    state = torch.load(trained / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer"} <= set(state)
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"]
    assert any(k.startswith("encoders.AP.") for k in state["model"]) and any(
        k.startswith("encoders.LAT.") for k in state["model"]
    )
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))


def test_a_model_runs_only_on_the_grid_it_was_trained_on(trained, xray_root, tmp_path):
    ckpt = trained / "models" / "model.pt"
    assert torch.load(ckpt, weights_only=True)._metadata[""][INPUT_GRID_KEY] == [192, 128]
    wrong = r"model\.pt: the network was trained on a 192x128 input grid, but this config gives it 384x256; "
    settings = {"dataset_dir": str(xray_root), "output_dir": str(tmp_path / "o"), "ckpt_path": str(ckpt)}
    with raises_in_chain(ValueError, wrong + r'use the settings it was trained with: --spatial_size "\[192, 128\]"'):
        run(config_file=_cfg("inference.json"), num_workers=0, **settings)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=wrong + r"package it with .* that give it \[192, 128\]"):
        package_bundle(BUNDLE, tmp_path / "dist", ckpt=ckpt)


def test_evaluate_writes_the_report_files(trained, xray_root, datalist):
    run(
        config_file=_cfg("evaluate.json"),
        dataset_dir=str(xray_root),
        datalist=str(datalist),
        output_dir=str(trained),
        **{k: v for k, v in FAST.items() if k != "progress_bar"},
    )
    ev = trained / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n"] == 2 and 0 <= metrics["accuracy"] <= 1
    assert metrics["roc_auc"] is None or 0 <= metrics["roc_auc"] <= 1
    report = pd.read_csv(ev / "classification_report.csv", index_col=0)
    assert list(report.index) == ["Normal", "Damaged", "accuracy", "macro avg", "weighted avg"]
    assert list(report.columns) == ["precision", "recall", "f1", "support"]
    assert report.loc["Normal", "support"] == 1 and report.loc["Damaged", "support"] == 1
    assert report.loc["accuracy", "f1"] == pytest.approx(metrics["accuracy"])
    cm = pd.read_csv(ev / "confusion_matrix.csv", index_col=0)
    assert list(cm.index) == ["Normal", "Damaged"] and list(cm.columns) == ["Normal", "Damaged"]
    assert cm.to_numpy().sum() == 2 and list(cm.sum(axis=1)) == [1, 1]
    roc = pd.read_csv(ev / "roc_curve.csv")
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    assert roc.iloc[0].tolist()[:2] == [0, 0] and roc.iloc[-1].tolist()[:2] == [1, 1]
    per_patient = pd.read_csv(ev / "per_patient.csv")
    assert list(per_patient.columns) == ["patient", "class", "label", "prob_damaged", "predicted"]
    assert len(per_patient) == 2 and per_patient["prob_damaged"].between(0, 1).all()
    assert set(per_patient["predicted"]) <= {"Normal", "Damaged"}
    assert (per_patient["label"] == (per_patient["class"] == "Damaged")).all()
    for png in ("confusion_matrix.png", "roc_curve.png"):
        with Image.open(ev / png) as im:
            assert im.width > 100 and im.height > 100


def test_inference_reports_one_view_and_unreadable_patients_and_goes_on(trained, xray_copy, tmp_path):
    for patient in ("Normal/ID (3)", "Normal/ID (4)", "Damaged/ID (2)", "Damaged/ID (3)"):
        shutil.rmtree(xray_copy / patient)  # fewer patients, a faster test
    shutil.rmtree(xray_copy / "Normal" / "ID (2)" / "LAT")
    bad = xray_copy / "Damaged" / "ID (4)" / "AP" / "AP.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    out = tmp_path / "infer"
    with raises_in_chain(DataError, match="patient Normal/ID \\(2\\): no LAT image"):
        run(
            config_file=_cfg("inference.json"),
            dataset_dir=str(xray_copy),
            output_dir=str(out),
            ckpt_path=str(trained / "models" / "model.pt"),
            **{k: v for k, v in FAST.items() if k != "progress_bar"},
        )
    failures = pd.read_csv(out / "failures.csv")
    assert len(failures) == 2
    assert any("Damaged/ID (4)/AP/AP.jpg" in p for p in failures["path"])
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["patient", "prob_damaged", "predicted_class"]
    assert sorted(predictions["patient"]) == ["Damaged/ID (1)", "Normal/ID (1)"]
    assert predictions["prob_damaged"].between(0, 1).all()
    for patient in predictions["patient"]:
        for view in ("AP", "LAT"):
            with Image.open(out / "cam" / patient / f"{view}_gradcam.png") as im:
                assert im.size == FILM_SIZE and im.mode == "RGB"  # the original film's size
    assert not (out / "cam" / "Normal" / "ID (2)").exists()


def test_occlusion_and_gradcam_of_one_sample(trained, xray_root, datalist, tmp_path):
    parser = _parser(
        "inference.json",
        dataset_dir=str(xray_root),
        datalist=str(datalist),
        infer_split="test",
        output_dir=str(tmp_path),
        ckpt_path=str(trained / "models" / "model.pt"),
        spatial_size=[64, 48],
        occlusion=True,
        occlusion_mask_size=32,
        num_workers=0,
    )
    writer = [h for h in parser.get_parsed_content("handlers") if h is not None][-1]
    sample = parser.get_parsed_content("dataset")[0]
    written = writer.explain(sample)
    assert set(written) == {"AP_gradcam", "LAT_gradcam", "AP_occlusion", "LAT_occlusion"}
    for path in written.values():
        with Image.open(path) as im:
            assert im.size == FILM_SIZE


@pytest.mark.parametrize(
    "views, shared, channels",
    [
        (("AP", "LAT"), False, 1),
        (("AP", "LAT"), True, 1),
        (("AP",), False, 1),
        (("LAT",), False, 3),
        (("AP", "LAT"), True, 2),
    ],
)
def test_network_modes(views, shared, channels):
    net = DualViewClassifier(views=views, in_channels=channels, backbone="resnet18", shared_encoder=shared).eval()
    x = torch.rand(3, channels * len(views), 64, 64)
    with torch.no_grad():
        assert net(x).shape == (3, 2)
    assert list(net.encoders) == (["shared"] if shared else list(views))
    names = {n for n, _ in net.named_modules()}
    assert {f"view_features.{v}" for v in views} <= names
    with pytest.raises(ValueError, match="input channels"):
        net(torch.rand(1, channels * len(views) + 1, 64, 64))


def test_network_rejects_bad_settings_and_loads_local_weights(tmp_path):
    with pytest.raises(ValueError, match="shared encoder needs the same channels"):
        DualViewClassifier(in_channels=[1, 2], shared_encoder=True)
    with pytest.raises(ValueError, match="unknown backbone"):
        DualViewClassifier(backbone="vgg16")
    shared = DualViewClassifier(shared_encoder=True)
    separate = DualViewClassifier(shared_encoder=False)
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in separate.parameters())
    enc = build_encoder("resnet18", 1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in enc.state_dict().items()}}, tmp_path / "enc.pt")
    net = DualViewClassifier(pretrained_path=str(tmp_path / "enc.pt"))
    for view in ("AP", "LAT"):
        assert torch.equal(net.encoders[view].conv1.weight, enc.conv1.weight)
    with pytest.raises(ValueError, match="missing keys: .*layer1.2"):
        DualViewClassifier(backbone="resnet34", pretrained_path=str(tmp_path / "enc.pt"))
    with pytest.raises(ValueError, match=r"shape mismatch: conv1.weight"):
        DualViewClassifier(in_channels=2, pretrained_path=str(tmp_path / "enc.pt"))


@pytest.fixture
def imbalanced_datalist(xray_root, datalist, tmp_path):
    """Train split of 3 Normal and 1 Damaged patient; fold 0 (validation) holds one Normal."""
    dl = json.loads(datalist.read_text())
    everyone = dl["training"] + dl["testing"]
    normal = [r for r in everyone if r["class"] == "Normal"]
    damaged = [r for r in everyone if r["class"] == "Damaged"][:1]
    dl["training"] = [{**r, "fold": 0 if i == 0 else 1} for i, r in enumerate(normal)] + [
        {**r, "fold": 1} for r in damaged
    ]
    path = tmp_path / "imbalanced.json"
    write_datalist(path, dl)
    return path


def test_class_balancing_reaches_the_loss_and_the_sampler(xray_root, imbalanced_datalist):
    records = cls_records(imbalanced_datalist, xray_root, ["AP", "LAT"], "train", 0)
    assert [r["class"] for r in records].count("Normal") == 3 and len(records) == 4
    assert class_weights(records) == pytest.approx([4 / 6, 2.0])
    common = dict(
        dataset_dir=str(xray_root),
        datalist=str(imbalanced_datalist),
        num_workers=0,
        progress_bar=False,
        spatial_size=[64, 48],
    )
    parser = _parser("train.json", class_balance="loss", **common)
    trainer = parser.get_parsed_content("train#trainer")
    assert isinstance(trainer.loss_function, torch.nn.CrossEntropyLoss)
    assert trainer.loss_function.weight.tolist() == pytest.approx([4 / 6, 2.0])
    assert not isinstance(trainer.data_loader.sampler, torch.utils.data.WeightedRandomSampler)

    parser = _parser("train.json", class_balance="sampler", **common)
    trainer = parser.get_parsed_content("train#trainer")
    assert trainer.loss_function.weight is None
    sampler = trainer.data_loader.sampler
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler)
    labels = [r["class_label"] for r in parser.get_parsed_content("train#records")]
    assert sampler.weights.tolist() == pytest.approx([[4 / 6, 2.0][y] for y in labels])
    drawn = [labels[i] for i in weighted_sampler(records, num_samples=4000, seed=0)]
    assert 0.45 < np.mean(drawn) < 0.55  # both classes drawn about equally often

    parser = _parser("train.json", class_balance="none", **common)
    assert parser.get_parsed_content("loss").weight is None
    assert parser.get_parsed_content("train#sampler") is None
    with raises_in_chain(ValueError, match="class_balance must be one of"):
        _parser("train.json", class_balance="oversample", **common).get_parsed_content("loss")


@pytest.mark.parametrize(
    "overrides, channels",
    [
        ({"views": ["AP"]}, [1]),
        ({"views": ["LAT"], "shared_encoder": True}, [1]),
        ({"mask_guided": True, "mask_structures": ["Ap_Vertebra", "Ap_Pedicle", "Lat_Vertebra"]}, [3, 2]),
    ],
)
def test_single_view_and_mask_guided_inputs(xray_root, datalist, overrides, channels):
    parser = _parser(
        "train.json",
        dataset_dir=str(xray_root),
        datalist=str(datalist),
        num_workers=0,
        progress_bar=False,
        spatial_size=[64, 48],
        **({"mask_dir": str(xray_root)} if overrides.get("mask_guided") else {}),
        **overrides,
    )
    assert parser.get_parsed_content("in_channels") == channels
    sample = parser.get_parsed_content("validate#dataset")[0]
    assert sample["image"].shape == (sum(channels), 64, 48)
    if overrides.get("mask_guided"):
        masks = sample["image"][1:3]
        assert set(torch.unique(masks).tolist()) <= {0.0, 1.0} and masks.sum() > 0
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        assert net(sample["image"][None]).shape == (1, 2)


def test_mask_guided_needs_a_mask_dir_and_every_mask(xray_copy, datalist):
    with raises_in_chain(ValueError, match="mask_dir is empty"):
        _parser("train.json", mask_guided=True).get_parsed_content("masks_from")
    (xray_copy / "Normal" / "ID (1)" / "LAT" / "Lat_Vertebra.png").unlink()
    with pytest.raises(DataError, match="patient Normal/ID \\(1\\): missing LAT mask Lat_Vertebra"):
        cls_records(datalist, xray_copy, ("AP", "LAT"), "all", None, xray_copy, ["Ap_Vertebra", "Lat_Vertebra"])
    assert image_keys(["AP", "LAT"], True, ["Lat_Vertebra"]) == ["AP", "LAT", "LAT_masks"]
    assert view_channels(["AP"], "true", ["Ap_Vertebra", "Lat_Vertebra"]) == [2]


def test_records_and_inputs_name_every_patient_without_a_view(xray_root, datalist, tmp_path):
    dl = json.loads(datalist.read_text())
    for r in dl["training"][:2]:
        del r["LAT"]
    broken = tmp_path / "dl.json"
    write_datalist(broken, dl)
    with pytest.raises(DataError) as info:
        cls_records(broken, xray_root, ("AP", "LAT"), "training")
    assert len(info.value.problems) == 2
    assert all("no LAT image" in p.reason for p in info.value.problems)
    assert len(cls_records(broken, xray_root, ("AP",), "training")) == 6
    inputs = cls_inference_inputs(xray_root, ("AP", "LAT"), datalist=broken, split="training")
    assert len(inputs.records) == 4 and len(inputs.problems) == 2


def test_view_augmentations_move_each_view_with_its_masks():
    square = torch.zeros(1, 64, 48)
    square[:, 20:44, 14:34] = 1.0
    keys = image_keys(["AP", "LAT"], True, ["Ap_Vertebra", "Lat_Vertebra"])
    moved_apart = False
    for seed in range(8):
        augment = Compose(view_augmentations(["AP", "LAT"], keys, [64, 48], rotate=0.5, scale=0.2, translate=0.1))
        augment.set_random_state(seed)
        out = augment({k: square.clone() for k in keys})
        for view in ("AP", "LAT"):
            mask = out[f"{view}_masks"]
            assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
            # the mask follows its own film: where the film is clearly inside (or outside) the square, so is it
            film = out[view]
            inside, outside = (film > 0.9) & (film < 1.5), film < 0.01
            assert mask[inside].min() == 1 and mask[outside].max() == 0
        moved_apart |= not torch.equal(out["AP_masks"], out["LAT_masks"])
    assert moved_apart, "the two views were always moved together"


def test_metrics_match_their_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) * 0.5 + 0.4 * y, 2)  # rounded so that scores tie
    assert roc_auc(y, s) == pytest.approx(float(compute_roc_auc(torch.as_tensor(s), torch.as_tensor(y))))
    fpr, tpr, thr = roc_curve(y, s)
    assert (fpr[0], tpr[0], thr[0]) == (0, 0, np.inf) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.all(np.diff(thr) < 0) and np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s))
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))

    truth, pred = [0, 0, 0, 1, 1], [0, 0, 1, 1, 0]
    assert confusion_matrix(truth, pred).tolist() == [[2, 1], [1, 1]]
    assert accuracy(truth, pred) == pytest.approx(0.6)
    report = classification_report(truth, pred, ["Normal", "Damaged"])
    assert report.loc["Normal"].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 3])
    assert report.loc["Damaged"].tolist() == pytest.approx([0.5, 0.5, 0.5, 2])
    assert report.loc["macro avg", "f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert report.loc["weighted avg", "recall"] == pytest.approx(0.6)
    assert report.loc["accuracy", "f1"] == pytest.approx(0.6) and np.isnan(report.loc["accuracy", "precision"])


def test_metadata_network_io_and_files(tmp_path):
    meta = BUNDLE / "configs" / "metadata.json"
    schema = SHARED / "monai" / "meta_schema_20240725.json"
    if schema.is_file():
        verify_metadata(meta_file=str(meta), filepath=str(schema))
    verify_net_in_out(net_id="network_def", meta_file=str(meta), config_file=_cfg("inference.json"), device="cpu", n=1)
    doc = json.loads(meta.read_text())
    assert doc["version"] in doc["changelog"]
    # the version the bundle was last released with: this repository's package must be at least that
    required, installed = doc["required_packages_version"]["spine-monai"], spine_monai.__version__
    assert tuple(map(int, required.split("."))) <= tuple(map(int, installed.split(".")))
    for f in (
        "configs/train.json",
        "configs/evaluate.json",
        "configs/inference.json",
        "configs/logging.conf",
        "docs/README.md",
        "LICENSE",
        "models/.gitkeep",
    ):
        assert (BUNDLE / f).is_file(), f
    if not schema.is_file():
        pytest.skip("../shared/monai/meta_schema_20240725.json is not beside the repository")


def test_torchscript_export_matches_eager(trained, tmp_path):
    ts = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(trained / "models" / "model.pt"),
        meta_file=_cfg("metadata.json"),
        config_file=_cfg("inference.json"),
        key_in_ckpt="",
    )
    scripted = torch.jit.load(str(ts))
    net = _parser("inference.json").get_parsed_content("network_def")
    net.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    net.eval()
    x = torch.rand(2, 2, 192, 128)
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), net(x).numpy(), atol=1e-5)
