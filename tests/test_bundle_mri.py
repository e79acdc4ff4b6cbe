"""The MRI slice-segmentation bundle through monai.bundle on tiny synthetic volumes."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, SHARED, assert_training_cache_untouched, raises_in_chain
from monai.bundle import run, verify_metadata, verify_net_in_out
from monai.transforms import Compose
from PIL import Image

from spine_monai.data import build_mri_datalist, read_volume, write_datalist
from spine_monai.data.mri import dicom_series_datasets
from spine_monai.errors import DataError
from spine_monai.synthetic.mri import write_mri_dataset
from spine_monai.transforms import LoadVolume, SaveLabelVolume
from spine_monai.workflow import read_bundle_config, run_config_files

BUNDLE = REPO / "bundles" / "spine_mri_seg"
# Coarser in-plane spacing and smaller patches keep the CPU test quick; the pipeline is the real one.
FAST = {"num_workers": 0, "progress_bar": False, "in_plane_spacing": [3.0, 3.0], "patch_size": [96, 96]}
FAST_EVAL = {"num_workers": 0, "in_plane_spacing": [3.0, 3.0], "patch_size": [96, 96]}


def _cfg(*names):
    files = run_config_files(BUNDLE / "configs", *names)
    return files[0] if len(files) == 1 else files


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    root = tmp_path_factory.mktemp("mri") / "data"
    write_mri_dataset(root, cases=5, seed=2, shape=(6, 96, 96), dicom_cases=1, workers=1)
    datalist = root.parent / "datalist.json"
    write_datalist(datalist, build_mri_datalist(root, folds=2, test_fraction=0.2, seed=0))
    out = root.parent / "run"
    run(
        config_file=_cfg("train.json"),
        dataset_dir=str(root),
        datalist=str(datalist),
        output_dir=str(out),
        val_interval=1,
        slices_per_volume=2,
        **{"train#trainer#max_epochs": 1},
        **FAST,
    )
    return root, datalist, out


def test_train_and_evaluate(mri):
    root, datalist, out = mri
    assert (out / "models" / "model.pt").is_file()
    run(
        config_file=_cfg("evaluate.json"),
        dataset_dir=str(root),
        datalist=str(datalist),
        output_dir=str(out),
        **FAST_EVAL,
    )
    per_case = pd.read_csv(out / "eval" / "per_case.csv")
    assert list(per_case.columns) == ["case", "class", "Dice", "IoU", "FP", "FN"]
    assert per_case["class"].nunique() == 12
    overall = pd.read_csv(out / "eval" / "overall.csv")
    assert list(overall.columns) == ["case", "pixel_accuracy", "mean_accuracy", "mean_iou", "mean_iou_no_bg", "fw_iou"]
    assert overall["case"].iloc[-1] == "mean" and len(overall) == per_case["case"].nunique() + 1
    assert overall.drop(columns="case").apply(lambda c: c.between(0, 1).all()).all()
    case = per_case["case"].iloc[0]
    pred = nib.load(out / "eval" / "predictions" / case / "label.nii.gz")
    label = nib.load(root / case / "label.nii.gz")
    assert pred.shape == label.shape
    np.testing.assert_allclose(pred.affine, label.affine, atol=1e-4)


def test_inference_keeps_the_input_grid_for_nifti_and_dicom(mri, tmp_path):
    root, _, out = mri
    infer = tmp_path / "infer"
    run(
        config_file=_cfg("inference.json"),
        dataset_dir=str(root),
        output_dir=str(infer),
        ckpt_path=str(out / "models" / "model.pt"),
        **FAST_EVAL,
    )
    written = sorted(p.parent.name for p in (infer / "predictions").rglob("label.nii.gz"))
    assert written == sorted(p.name for p in root.iterdir() if p.is_dir())
    dicom_case = next(p for p in root.iterdir() if (p / "T1w").is_dir())
    nifti_case = next(p for p in root.iterdir() if (p / "T1w.nii.gz").is_file())
    for case in (dicom_case, nifti_case):
        source = case / "T1w" if case == dicom_case else case / "T1w.nii.gz"
        array, affine = read_volume(source)
        pred = nib.load(infer / "predictions" / case.name / "label.nii.gz")
        assert pred.shape == array.shape, case.name
        np.testing.assert_allclose(pred.affine, affine, atol=1e-4, err_msg=case.name)
        assert set(np.unique(np.asarray(pred.dataobj))) <= set(range(12))
    # The DICOM series also gets its label as a multi-frame DICOM SEG referencing the series, frame k being slice k.
    import highdicom
    import pydicom

    seg = highdicom.seg.segread(infer / "predictions" / dicom_case.name / "label_seg.dcm")
    series = sorted((pydicom.dcmread(f) for f in (dicom_case / "T1w").iterdir()), key=lambda d: d.InstanceNumber)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series[0].SeriesInstanceUID
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {d.SOPInstanceUID for d in series}
    label = np.asarray(nib.load(infer / "predictions" / dicom_case.name / "label.nii.gz").dataobj)
    ordered = dicom_series_datasets(dicom_case / "T1w")
    classes = seg.get_pixels_by_source_instance(
        [d.SOPInstanceUID for d in ordered], combine_segments=True, relabel=False
    )
    assert np.array_equal(classes, np.transpose(label, (2, 1, 0)))
    assert seg.get_segment_description(1).segment_label == "vertebrae"


def test_inference_in_channels_last_gives_the_same_labels(mri, tmp_path):
    """Channels-last weights (the CPU default of evaluate.json and inference.json) predict what channels first does."""
    root, _, out = mri
    parser = read_bundle_config(_cfg("inference.json"))
    assert parser.get_parsed_content("memory_format") is torch.channels_last
    convs = [m.weight for m in parser.get_parsed_content("network").modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    labels = {}
    for channels_last in (False, True):
        infer = tmp_path / str(channels_last)
        run(
            config_file=_cfg("inference.json"),
            dataset_dir=str(root),
            output_dir=str(infer),
            ckpt_path=str(out / "models" / "model.pt"),
            channels_last=channels_last,
            **FAST_EVAL,
        )
        labels[channels_last] = {
            p.parent.name: np.asarray(nib.load(p).dataobj) for p in (infer / "predictions").rglob("label.nii.gz")
        }
    assert sorted(labels[True]) == sorted(labels[False]) and labels[True]
    for case, first in labels[False].items():
        # Another order of summation may flip a voxel whose two best classes tie to float rounding.
        assert np.mean(first != labels[True][case]) < 1e-4, case


def test_slicing_axis_comes_from_the_affine(mri, tmp_path):
    """A case stored in another voxel order gives the same preprocessed sagittal slices."""
    root, _, _ = mri
    case = next(p for p in root.iterdir() if (p / "T1w.nii.gz").is_file())
    other = tmp_path / case.name
    other.mkdir()
    for name in ("T1w", "T2w", "label"):
        img = nib.load(case / f"{name}.nii.gz")
        target = nib.orientations.axcodes2ornt(("L", "S", "A"))
        xform = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine), target)
        nib.save(img.as_reoriented(xform), other / f"{name}.nii.gz")
    assert nib.aff2axcodes(nib.load(other / "T1w.nii.gz").affine) == ("L", "S", "A")
    assert nib.aff2axcodes(nib.load(case / "T1w.nii.gz").affine) != ("L", "S", "A")
    parser = read_bundle_config(_cfg("train.json"))
    parser.update({"in_plane_spacing": [3.0, 3.0]})
    transform = Compose(parser.get_parsed_content("preprocessing"))
    a = transform({c: str(case / f"{c}.nii.gz") for c in ("T1w", "T2w", "label")})
    b = transform({c: str(other / f"{c}.nii.gz") for c in ("T1w", "T2w", "label")})
    assert a["image"].shape == b["image"].shape
    np.testing.assert_allclose(a["image"].numpy(), b["image"].numpy(), atol=1e-4)
    np.testing.assert_array_equal(a["label"].numpy(), b["label"].numpy())
    # PIR: the last axis is left-right, so sagittal slices are image[..., k].
    assert nib.aff2axcodes(a["image"].affine.numpy()) == ("P", "I", "R")


def test_sixteen_bit_png_slices(mri, tmp_path):
    _, _, out = mri
    root = tmp_path / "png"
    write_mri_dataset(root, cases=2, seed=4, shape=(4, 96, 96), slice_format="png", workers=1)
    datalist = tmp_path / "dl.json"
    write_datalist(datalist, build_mri_datalist(root, folds=2, test_fraction=0.5))
    run(
        config_file=_cfg("evaluate.json"),
        dataset_dir=str(root),
        datalist=str(datalist),
        output_dir=str(tmp_path),
        ckpt_path=str(out / "models" / "model.pt"),
        **FAST_EVAL,
    )
    per_case = pd.read_csv(tmp_path / "eval" / "per_case.csv")
    assert per_case["case"].str.contains("/slice_").all()


def test_a_png_slice_gets_a_png_label_in_its_own_orientation(mri, tmp_path):
    """PNG in, PNG out: the label has the input's rows and columns (a non-square slice shows any transpose)."""
    _, _, out = mri
    root = tmp_path / "png"
    write_mri_dataset(root, cases=1, seed=5, shape=(2, 96, 72), slice_format="png", workers=1)
    label_png = next(root.rglob("label.png"))
    # The saver alone: a label read as the bundle reads it comes back as the same picture.
    loaded = LoadVolume(label=True)(label_png)
    SaveLabelVolume(tmp_path / "roundtrip")(loaded, subdir="case")
    with Image.open(label_png) as a, Image.open(tmp_path / "roundtrip" / "case" / "label.png") as b:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Through inference.json.
    infer = tmp_path / "infer"
    run(
        config_file=_cfg("inference.json"),
        dataset_dir=str(root),
        output_dir=str(infer),
        ckpt_path=str(out / "models" / "model.pt"),
        **FAST_EVAL,
    )
    written = sorted((infer / "predictions").rglob("label.png"))
    assert len(written) == 2 and not list((infer / "predictions").rglob("*.nii.gz"))
    for path in written:
        with Image.open(path) as img:
            assert img.size == (72, 96) and img.mode == "L"


def test_inference_reports_bad_volumes_and_processes_the_rest(mri, tmp_path):
    root, _, out = mri
    data = tmp_path / "data"
    shutil.copytree(root, data)
    case = next(p for p in data.iterdir() if (p / "T2w.nii.gz").is_file())
    img = nib.load(case / "T2w.nii.gz")
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), case / "T2w.nii.gz")
    infer = tmp_path / "infer"
    with raises_in_chain(DataError, match="T2w.nii.gz: .*NaN"):
        run(
            config_file=_cfg("inference.json"),
            dataset_dir=str(data),
            output_dir=str(infer),
            ckpt_path=str(out / "models" / "model.pt"),
            **FAST_EVAL,
        )
    assert len(list((infer / "predictions").rglob("label.nii.gz"))) == 4
    assert not (infer / "predictions" / case.name).exists()
    assert "NaN" in (infer / "failures.csv").read_text()


def test_random_training_transforms_leave_the_cache_alone(mri):
    root, datalist, _ = mri
    parser = read_bundle_config(_cfg("train.json"))
    parser.update({"dataset_dir": str(root), "datalist": str(datalist), "slices_per_volume": 2, **FAST})
    assert_training_cache_untouched(parser)


def test_training_slices_come_from_cached_indices(mri):
    """The foreground and background voxels are looked up once, into the cache (int32, on the padded grid); every
    drawn slice holds foreground when empty slices get no weight."""
    root, datalist, _ = mri
    parser = read_bundle_config(_cfg("train.json"))
    parser.update({"dataset_dir": str(root), "datalist": str(datalist), "slices_per_volume": 3, **FAST})
    dataset = parser.get_parsed_content("train#dataset")
    for item in dataset._cache:
        fg, bg = item["label_fg_indices"], item["label_bg_indices"]
        assert fg.dtype == bg.dtype == torch.int32
        assert len(fg) + len(bg) == item["label"].numel() and len(fg) == int((item["label"] > 0).sum())
        assert min(item["image"].shape[1:3]) >= 96, "the in-plane padding to patch_size is cached"
    for i in range(len(dataset)):
        slices = dataset[i]
        assert len(slices) == 3
        for s in slices:
            assert s["image"].shape == (2, 96, 96) and type(s["image"]) is torch.Tensor
            assert "label_fg_indices" not in s
    # with the crop centred (no random in-plane patch), each drawn slice is one holding foreground
    parser.update({"random_patches": False})
    dataset = parser.get_parsed_content("train#dataset", lazy=False)
    assert all(s["label"].sum() > 0 for i in range(len(dataset)) for s in dataset[i])


def test_label_outside_the_map_stops_training(mri, tmp_path):
    root, datalist, _ = mri
    data = tmp_path / "data"
    shutil.copytree(root, data)
    records = json.loads(datalist.read_text())["training"]
    case = data / records[0]["case"]
    img = nib.load(case / "label.nii.gz")
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 14
    nib.save(nib.Nifti1Image(arr, img.affine), case / "label.nii.gz")
    with raises_in_chain(DataError, match=r"label values \{14\} are not in the label map"):
        run(
            config_file=_cfg("train.json"),
            dataset_dir=str(data),
            datalist=str(datalist),
            output_dir=str(tmp_path / "o"),
            **{"train#trainer#max_epochs": 1},
            **FAST,
        )


def test_other_label_sets_and_one_channel(mri, tmp_path):
    """A user with {background, disc, vertebra} and only T2w overrides the map and channels; outputs follow."""
    parser = read_bundle_config(_cfg("train.json"))
    parser.update({"label_map": {"background": 0, "disc": 1, "vertebra": 2}, "channels": ["T2w"]})
    net = parser.get_parsed_content("network_def")
    assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    parser.update({"label_map": {"background": 0, "disc": 2}})
    with raises_in_chain(ValueError, match="without gaps"):
        parser.get_parsed_content("n_classes")


def test_metadata_and_network_io():
    schema = SHARED / "monai" / "meta_schema_20240725.json"
    if not schema.is_file():
        pytest.skip("../shared/monai/meta_schema_20240725.json is not beside the repository")
    meta = str(BUNDLE / "configs" / "metadata.json")
    verify_metadata(meta_file=meta, filepath=str(schema))
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=_cfg("inference.json"), device="cpu", n=1)
    for f in (
        "configs/train.json",
        "configs/evaluate.json",
        "configs/inference.json",
        "configs/logging.conf",
        "docs/README.md",
        "LICENSE",
    ):
        assert (BUNDLE / f).is_file(), f


def test_bad_volumes_end_training_with_exit_1_and_every_problem_last(mri, tmp_path):
    """Not SIGABRT: the cache's threads are all finished before the error leaves the process."""
    import subprocess
    import sys

    root, datalist, _ = mri
    data = tmp_path / "data"
    shutil.copytree(root, data)
    records = json.loads(datalist.read_text())["training"]
    # Both in the training folds (fold 0 validates), whose cache is built first.
    nifti = [r for r in records if r["fold"] != 0 and (data / r["case"] / "T1w.nii.gz").is_file()]
    bad_t1, bad_label = data / nifti[0]["case"] / "T1w.nii.gz", data / nifti[1]["case"] / "label.nii.gz"
    img = nib.load(bad_t1)
    arr = np.asarray(img.dataobj, dtype=np.float32).copy()
    arr[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), bad_t1)
    img = nib.load(bad_label)
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 14
    nib.save(nib.Nifti1Image(arr, img.affine), bad_label)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _cfg("train.json")]
    cmd += ["--dataset_dir", str(data), "--datalist", str(datalist), "--output_dir", str(tmp_path / "o")]
    cmd += ["--train#trainer#max_epochs", "1", "--num_workers", "2", "--progress_bar", "False"]
    cmd += ["--in_plane_spacing", "[3.0, 3.0]", "--patch_size", "[96, 96]"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    tail = result.stderr.strip().splitlines()[-3:]
    assert tail[0] == "spine_monai.errors.DataError: 2 data problems:", tail
    assert str(bad_t1) in tail[1] and "NaN" in tail[1], tail
    assert str(bad_label) in tail[2] and "label values {14}" in tail[2], tail


def test_evaluation_goes_through_every_volume_and_lists_the_bad_ones(mri, tmp_path):
    root, datalist, out = mri
    data = tmp_path / "data"
    shutil.copytree(root, data)
    doc = json.loads(datalist.read_text())
    records = doc["testing"] + [r for r in doc["training"] if (data / r["case"] / "T1w.nii.gz").is_file()][:1]
    bad = data / records[-1]["case"] / "T1w.nii.gz"
    img = nib.load(bad)
    arr = np.asarray(img.dataobj, dtype=np.float32).copy()
    arr[0, 1, 2] = np.inf
    nib.save(nib.Nifti1Image(arr, img.affine), bad)
    bad_list = tmp_path / "datalist.json"
    bad_list.write_text(json.dumps({"testing": records}))
    run_dir = tmp_path / "run"
    shutil.copytree(out / "models", run_dir / "models")
    with raises_in_chain(DataError, match="NaN/inf"):
        run(
            config_file=_cfg("evaluate.json"),
            dataset_dir=str(data),
            datalist=str(bad_list),
            output_dir=str(run_dir),
            write_predictions=False,
            **FAST_EVAL,
        )
    assert list(pd.read_csv(run_dir / "eval" / "failures.csv")["path"]) == [str(bad)]
    evaluated = set(pd.read_csv(run_dir / "eval" / "per_case.csv")["case"])
    assert evaluated == {r["case"] for r in records[:-1]}


def test_a_model_of_other_channels_or_a_malicious_file_is_refused_by_name(mri, tmp_path):
    root, _, out = mri
    model = out / "models" / "model.pt"
    with raises_in_chain(
        ValueError, match=r"does not belong to this config.*inputs \['T1w', 'T2w'\] \(this config: \['T1w'\]\)"
    ):
        run(
            config_file=_cfg("inference.json"),
            dataset_dir=str(root),
            output_dir=str(tmp_path / "o"),
            ckpt_path=str(model),
            channels=["T1w"],
            **FAST_EVAL,
        )

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    evil = tmp_path / "model.pt"
    torch.save({"model": Payload()}, evil)
    with raises_in_chain(ValueError, match=r"model\.pt: refused: it holds Python objects besides tensors"):
        run(
            config_file=_cfg("inference.json"),
            dataset_dir=str(root),
            output_dir=str(tmp_path / "e"),
            ckpt_path=str(evil),
            **FAST_EVAL,
        )
