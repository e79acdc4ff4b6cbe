"""The vertebra-level classifier: its patches, its network, and the bundle run with ``vertebra_level: true``."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from conftest import REPO, raises_in_chain
from monai.bundle import run
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd
from PIL import Image

from spine_monai.data import build_xray_datalist, write_datalist
from spine_monai.errors import DataError
from spine_monai.networks import VertebraMILClassifier, patient_classifier
from spine_monai.transforms import VertebraPatches, VertebraPatchesd, classifier_geometry
from spine_monai.workflow import INPUT_GRID_KEY, read_bundle_config, run_config_files

BUNDLE = REPO / "bundles" / "spine_xray_cls"
FILM_SIZE = (384, 576)  # (W, H) of the synthetic films
FAST = {"num_workers": 0, "progress_bar": False, "vertebra_level": True, "patch_size": 24}


def _bodies(heights=(20, 20, 10, 20), width=30, gap=30, size=(200, 120)) -> torch.Tensor:
    """A (1, H, W) mask of rectangular bodies stacked down the middle, with the given heights, top to bottom."""
    mask = torch.zeros(1, *size)
    y = 20
    for h in heights:
        mask[0, y : y + h, 45 : 45 + width] = 1
        y += h + gap
    return mask


def test_patches_keep_each_body_in_order_with_one_scale_per_film():
    mask = _bodies()
    film = torch.rand(1, *mask.shape[1:])
    patcher = VertebraPatches(patch_size=16, max_vertebrae=6, window=2.0)
    patches, mask_patches, windows = patcher(film, mask, name="case")
    assert patches.shape == (6, 16, 16) and mask_patches.shape == (6, 16, 16)
    assert windows.shape == (4, 3)
    assert windows[:, 1].tolist() == sorted(windows[:, 1].tolist())  # top to bottom
    assert windows[:, 2].tolist() == pytest.approx([40.0] * 4)  # 2 x the median height of 20 px, for every body
    area = mask_patches.flatten(1).sum(1)
    assert area[4:].eq(0).all() and patches[4:].eq(0).all()  # padding
    # The same window for every body keeps the collapsed third body at about half the others' area.
    assert area[2] / area[0] == pytest.approx(0.5, abs=0.08)
    assert mask_patches[0, 8, 8] == 1  # centred on its body
    pasted = patcher.paste(torch.ones(6, 16, 16), windows, mask.shape[1:])
    assert pasted.shape == (1, *mask.shape[1:])
    assert bool(pasted[mask > 0].gt(0.999).all())  # every body lies inside its window
    assert pasted[0, :, :5].sum() == 0  # nothing outside the windows


def test_a_slipped_body_sits_off_centre_in_its_window():
    mask = torch.zeros(1, 400, 160)
    for i in range(9):
        x0 = 45 + (10 if i >= 6 else 0)  # the bodies below the sixth slipped forward, as in a listhesis
        mask[0, 20 + 40 * i : 40 + 40 * i, x0 : x0 + 30] = 1
    _, _, windows = VertebraPatches(patch_size=16, max_vertebrae=10)(torch.rand(1, 400, 160), mask)
    centroids_x = torch.tensor([59.5] * 6 + [69.5] * 3)
    offsets = (centroids_x - torch.as_tensor(windows[:, 0])).abs()
    assert offsets[5:7].min() > 2.0  # the bodies on either side of the step are off the curve
    assert offsets[5:7].min() > offsets[:4].max()


def test_patches_refuse_films_they_cannot_cut():
    patcher = VertebraPatches(patch_size=16, max_vertebrae=3)
    film = torch.rand(1, 200, 120)
    with pytest.raises(DataError, match="case.png.*empty"):
        patcher(film, torch.zeros(1, 200, 120), name="case.png")
    with pytest.raises(DataError, match="case.png: 4 vertebral bodies, more than max_vertebrae=3"):
        patcher(film, _bodies(), name="case.png")
    with pytest.raises(DataError, match="do not match"):
        patcher(torch.rand(1, 100, 120), _bodies(), name="case.png")
    with pytest.raises(ValueError, match="patch_size"):
        VertebraPatches(patch_size=0)


def test_patchesd_trace_maps_patch_maps_back_onto_the_film():
    mask = _bodies()
    film = MetaTensor(torch.rand(1, *mask.shape[1:]), meta={"filename_or_obj": "film.jpg"})
    transform = Compose([VertebraPatchesd(keys="AP", mask_keys="AP_masks", patch_size=16, max_vertebrae=6)])
    out = transform({"AP": film, "AP_masks": torch.cat([mask, torch.zeros_like(mask)])})
    assert out["AP"].shape == (6, 16, 16) and out["AP_masks"].shape == (12, 16, 16)
    assert out["AP"].meta["filename_or_obj"] == "film.jpg"
    inverted = Invertd(keys="map", transform=transform, orig_keys="AP")(
        {"map": MetaTensor(torch.ones(6, 16, 16)), "AP": out["AP"]}
    )["map"]
    assert inverted.shape == (1, *mask.shape[1:])
    assert bool(inverted[mask > 0].gt(0.999).all())


def test_geometry_needs_each_views_vertebra_mask_first():
    keys = ["AP", "AP_masks", "LAT", "LAT_masks"]
    with pytest.raises(ValueError, match=r"start, for the views \['LAT'\], with \['Lat_Vertebra'\]"):
        classifier_geometry(["AP", "LAT"], keys, [64, 48], True, ["Ap_Vertebra", "Lat_Disk_Height"])
    (patcher,) = classifier_geometry(["AP", "LAT"], keys, [64, 48], True, ["Ap_Vertebra", "Lat_Vertebra"])
    assert isinstance(patcher, VertebraPatchesd)
    assert [type(t).__name__ for t in classifier_geometry(["AP"], ["AP"], [64, 48])] == ["ResizeToFitd", "SpatialPadd"]


@pytest.mark.parametrize(
    "views, channels, shared, pooling",
    [(("AP", "LAT"), 2, False, "attention"), (("AP", "LAT"), 2, True, "max"), (("LAT",), 3, False, "attention")],
)
def test_network_modes_and_padding_is_ignored(views, channels, shared, pooling):
    k, p = 5, 16
    net = VertebraMILClassifier(
        views=views, in_channels=channels, max_vertebrae=k, shared_encoder=shared, pooling=pooling
    ).eval()
    x = torch.rand(2, len(views) * channels * k, p, p)
    for v in range(len(views)):
        start = v * channels * k
        x[:, start + k - 2 : start + k] = 0  # film patches of the last two bodies (padding)
        x[:, start + k : start + channels * k].reshape(2, channels - 1, k, p, p)[:, :, -2:] = 0  # their masks
    with torch.no_grad():
        ref = net(x)
        assert ref.shape == (2, 2)
        # Padding is left out of the pooling: its film patches may hold anything.
        y = x.clone()
        for v in range(len(views)):
            y[:, v * channels * k + k - 1] = 5.0
        assert torch.allclose(net(y), ref, atol=1e-5)
        scripted = torch.jit.script(net)
        assert torch.allclose(scripted(x), ref, atol=1e-5)
    assert {f"view_features.{v}" for v in views} <= {n for n, _ in net.named_modules()}
    with pytest.raises(ValueError, match="input channels"):
        net(torch.rand(1, x.shape[1] + 1, p, p))


def test_network_and_factory_reject_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown pooling"):
        VertebraMILClassifier(pooling="mean")
    with pytest.raises(ValueError, match=">= 2"):
        VertebraMILClassifier(in_channels=1)
    with pytest.raises(ValueError, match="shared encoder"):
        VertebraMILClassifier(in_channels=[2, 3], shared_encoder=True)
    with pytest.raises(ValueError, match="pretrained_path"):
        patient_classifier(in_channels=2, vertebra_level=True, pretrained_path=tmp_path / "w.pt")
    with pytest.raises(TypeError, match="view_dim"):
        patient_classifier(in_channels=2, vertebra_level=True, view_dim=64)
    assert isinstance(patient_classifier(in_channels=2, vertebra_level=True, pooling="max"), VertebraMILClassifier)


@pytest.fixture(scope="module")
def vertebra_run(xray_root, datalist, tmp_path_factory):
    """One epoch of train.json at vertebra level on the reference vertebra masks, then evaluate.json."""
    out = tmp_path_factory.mktemp("vertebra_cls")
    common = {"dataset_dir": str(xray_root), "datalist": str(datalist), "output_dir": str(out)}
    common.update(mask_dir=str(xray_root), **FAST)
    run(config_file=str(BUNDLE / "configs" / "train.json"), batch_size=2, **{"train#trainer#max_epochs": 1}, **common)
    common.pop("progress_bar")
    run(config_file=run_config_files(BUNDLE / "configs", "evaluate.json"), **common)
    return out


def test_bundle_trains_and_evaluates_at_vertebra_level(vertebra_run, xray_root, tmp_path):
    state = torch.load(vertebra_run / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("attention.LAT.") for k in state)
    assert state._metadata[""][INPUT_GRID_KEY] == [24, 24]  # the patches, not spatial_size
    wrong = "trained on a 24x24 input grid, but this config gives it 32x32; .*--patch_size 24 at vertebra level"
    with raises_in_chain(ValueError, wrong):
        run(
            config_file=str(BUNDLE / "configs" / "inference.json"),
            dataset_dir=str(xray_root),
            mask_dir=str(xray_root),
            output_dir=str(tmp_path / "o"),
            ckpt_path=str(vertebra_run / "models" / "model.pt"),
            **{**{k: v for k, v in FAST.items() if k != "progress_bar"}, "patch_size": 32},
        )
    per_patient = pd.read_csv(vertebra_run / "eval" / "per_patient.csv")
    assert len(per_patient) == 2 and per_patient["prob_damaged"].between(0, 1).all()


def test_inference_at_vertebra_level_skips_an_uncuttable_patient_and_writes_gradcam(vertebra_run, xray_copy, tmp_path):
    for patient in ("Normal/ID (3)", "Normal/ID (4)", "Damaged/ID (2)", "Damaged/ID (3)"):
        shutil.rmtree(xray_copy / patient)  # fewer patients, a faster test
    blank = xray_copy / "Damaged" / "ID (4)" / "LAT" / "Lat_Vertebra.png"
    with Image.open(blank) as im:
        Image.new("1", im.size).save(blank)
    out = tmp_path / "infer"
    settings = {
        "dataset_dir": str(xray_copy),
        "mask_dir": str(xray_copy),
        "output_dir": str(out),
        "ckpt_path": str(vertebra_run / "models" / "model.pt"),
        **{k: v for k, v in FAST.items() if k != "progress_bar"},
    }
    with raises_in_chain(DataError, match="patient Damaged/ID \\(4\\): mask is empty"):
        run(config_file=str(BUNDLE / "configs" / "inference.json"), **settings)
    failures = pd.read_csv(out / "failures.csv")
    assert len(failures) == 1 and failures["path"][0].endswith("Damaged/ID (4)/LAT/Lat_Vertebra.png")
    predictions = pd.read_csv(out / "predictions.csv")
    assert sorted(predictions["patient"]) == ["Damaged/ID (1)", "Normal/ID (1)", "Normal/ID (2)"]
    for patient in predictions["patient"]:
        for view in ("AP", "LAT"):
            with Image.open(out / "cam" / patient / f"{view}_gradcam.png") as im:
                assert im.size == FILM_SIZE and im.mode == "RGB"  # the original film's size
    parser = read_bundle_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({**settings, "output_dir": str(tmp_path / "again")})
    sample = parser.get_parsed_content("dataset")[0]
    # Per body, AP: film and vertebra mask; LAT: film, vertebra mask and the two vertebral lines (the default).
    assert sample["image"].shape == ((2 + 4) * 20, 24, 24)
    parser.update({"occlusion": True})
    with raises_in_chain(ValueError, match="only GradCAM"):
        parser.get_parsed_content("handlers", lazy=False)


def test_vertebra_level_needs_masks(vertebra_run, xray_root, tmp_path):
    with raises_in_chain(ValueError, match="mask_dir is empty"):
        run(
            config_file=run_config_files(BUNDLE / "configs", "evaluate.json"),
            dataset_dir=str(xray_root),
            output_dir=str(tmp_path),
            ckpt_path=str(vertebra_run / "models" / "model.pt"),
            **{k: v for k, v in FAST.items() if k != "progress_bar"},
        )


def test_records_report_every_mask_that_cannot_be_cut(xray_copy, tmp_path):
    datalist = tmp_path / "datalist.json"
    write_datalist(datalist, build_xray_datalist(xray_copy, folds=2, test_fraction=0.25, seed=0))
    blanked = []
    for patient in ("Normal/ID (1)", "Damaged/ID (2)"):
        path = xray_copy / patient / "AP" / "Ap_Vertebra.png"
        with Image.open(path) as im:
            Image.new("1", im.size).save(path)
        blanked.append(path)
    parser = read_bundle_config(run_config_files(BUNDLE / "configs", "evaluate.json"))
    parser.update(
        {"dataset_dir": str(xray_copy), "datalist": str(datalist), "mask_dir": str(xray_copy), "eval_split": "all"}
    )
    parser.update({k: v for k, v in FAST.items() if k != "progress_bar"})
    with raises_in_chain(DataError) as info:
        parser.get_parsed_content("validate#records")
    message = str(info.value) + "".join(str(e) for e in (info.value.__cause__, info.value.__context__) if e)
    for path in blanked:
        assert str(path) in message
    assert "mask is empty" in message
