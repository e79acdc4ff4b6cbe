"""Every bad input gets a message naming the file and the fault, all reported in one run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from spine_monai.cli import main
from spine_monai.data.io import read_mask, read_radiograph
from spine_monai.errors import DataError


def _damage(root):
    """Break six patients in six different ways; leave two good and one with valid variants."""
    (root / "Normal/ID (1)/AP/Ap_Pedicle.png").unlink()
    shutil.rmtree(root / "Normal/ID (2)/LAT")
    Image.open(root / "Normal/ID (3)/LAT/Lat_Vertebra.png").resize((300, 500)).save(
        root / "Normal/ID (3)/LAT/Lat_Vertebra.png"
    )
    jpg = root / "Normal/ID (4)/AP/AP.jpg"
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 3])
    m = np.asarray(Image.open(root / "Damaged/ID (1)/AP/Ap_Vertebra.png"), dtype=np.uint8)
    m = m.copy()
    m[0, :10] = 2
    Image.fromarray(m, mode="L").save(root / "Damaged/ID (1)/AP/Ap_Vertebra.png")
    rgb = np.zeros((576, 384, 3), np.uint8)
    rgb[10:20, 10:20, 0] = 255
    Image.fromarray(rgb).save(root / "Damaged/ID (1)/LAT/Lat_Spinous_Process.png")
    # Valid variants: a 0/255 8-bit mask and a grayscale JPEG.
    m255 = (np.asarray(Image.open(root / "Damaged/ID (2)/AP/Ap_Vertebra.png")) * 255).astype(np.uint8)
    Image.fromarray(m255, mode="L").save(root / "Damaged/ID (2)/AP/Ap_Vertebra.png")
    Image.open(root / "Damaged/ID (2)/AP/AP.jpg").convert("L").save(root / "Damaged/ID (2)/AP/AP.jpg")
    (root / "Maybe").mkdir()
    (root / "Damaged/patient 5").mkdir()
    Image.new("L", (8, 8)).save(root / "Damaged/ID (3)/AP/AP copy.png")


def test_every_problem_reported_at_once(xray_copy, tmp_path, capsys):
    _damage(xray_copy)
    out = tmp_path / "dl.json"
    rc = main(["datalist", "xray", "--root", str(xray_copy), "--out", str(out), "--folds", "2"])
    assert rc == 1
    err = capsys.readouterr().err
    dl = json.loads(out.read_text())
    assert sorted(r["patient"] for r in dl["training"]) == ["Damaged/ID (2)", "Damaged/ID (3)", "Damaged/ID (4)"]
    reasons = {(p["path"].replace(str(xray_copy) + "/", ""), p["reason"]) for p in dl["problems"]}
    expected = [
        ("Normal/ID (1)/AP/Ap_Pedicle.png", "missing mask for structure Ap_Pedicle"),
        ("Normal/ID (2)/LAT", "missing view: no LAT folder"),
        ("Normal/ID (3)/LAT/Lat_Vertebra.png", "mask size 300x500 differs from its image's 384x576"),
        ("Normal/ID (4)/AP/AP.jpg", "truncated or corrupt image"),
        ("Damaged/ID (1)/AP/Ap_Vertebra.png", "mask is not binary: values {0, 1, 2}"),
        ("Damaged/ID (1)/LAT/Lat_Spinous_Process.png", "mask is a colour image"),
        ("Maybe", "unknown folder: expected one of Normal, Damaged"),
        ("Damaged/patient 5", "unknown folder: expected a patient folder named 'ID (<n>)'"),
    ]
    for path, reason in expected:
        assert any(p == path and reason in r for p, r in reasons), (path, reason, reasons)
        assert reason.split(":")[0] in err
    assert len(dl["problems"]) == len(expected)
    assert [w["path"].endswith("AP copy.png") for w in dl["warnings"]] == [True]
    assert "--allow-incomplete" in err

    rc = main(["datalist", "xray", "--root", str(xray_copy), "--out", str(out), "--allow-incomplete"])
    assert rc == 0


def test_structure_subset_makes_other_masks_optional(xray_copy, tmp_path):
    (xray_copy / "Normal/ID (1)/AP/Ap_Pedicle.png").unlink()
    out = tmp_path / "dl.json"
    assert (
        main(
            [
                "datalist",
                "xray",
                "--root",
                str(xray_copy),
                "--out",
                str(out),
                "--views",
                "AP",
                "--structures",
                "Ap_Vertebra",
            ]
        )
        == 0
    )
    rec = json.loads(out.read_text())["training"][0]
    assert "Ap_Vertebra" in rec and "Ap_Pedicle" not in rec and "LAT" not in rec
    assert main(["datalist", "xray", "--root", str(xray_copy), "--out", str(out), "--structures", "Ap_Vertebrae"]) == 2


def test_empty_and_missing_trees(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "dl.json"
    assert main(["datalist", "xray", "--root", str(tmp_path / "empty"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "empty tree" in err and "nothing written" in err
    assert not out.exists()
    assert main(["datalist", "xray", "--root", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "dataset root not found" in capsys.readouterr().err


def test_readers_name_the_file(tmp_path):
    with pytest.raises(DataError) as e:
        read_radiograph(tmp_path / "AP.jpg")
    assert e.value.path.endswith("AP.jpg") and "file not found" in e.value.reason
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="x.jpg: truncated or corrupt image"):
        read_radiograph(tmp_path / "x.jpg")
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[False, True], [True, False]]
    with pytest.raises(DataError, match="m.png: mask size 2x2 differs"):
        read_mask(tmp_path / "m.png", expected_size=(4, 4))


def _drawn(shape=(12, 10)):
    drawn = np.zeros(shape, bool)
    drawn[3:8, 2:6] = True
    return drawn


@pytest.mark.parametrize("ink", [0, 255], ids=["black-on-transparent", "white-on-transparent"])
def test_a_mask_drawn_in_the_alpha_channel_is_read_from_its_alpha(tmp_path, ink):
    drawn = _drawn()
    rgba = np.zeros((*drawn.shape, 4), np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = drawn * 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    la = np.stack([np.full(drawn.shape, ink, np.uint8), (drawn * 255).astype(np.uint8)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    palette = Image.fromarray(drawn.astype(np.uint8), mode="P")
    palette.putpalette([ink, ink, ink] * 2)
    palette.save(tmp_path / "p.png", transparency=0)
    for name in ("rgba.png", "la.png", "p.png"):
        assert np.array_equal(read_mask(tmp_path / name, expected_size=(10, 12)), drawn), name


def test_an_opaque_alpha_leaves_the_mask_in_its_values_and_a_soft_alpha_is_named(tmp_path):
    drawn = _drawn()
    la = np.stack([(drawn * 255).astype(np.uint8), np.full(drawn.shape, 255, np.uint8)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "opaque.png")
    assert np.array_equal(read_mask(tmp_path / "opaque.png"), drawn)
    soft = la.copy()
    soft[..., 1] = drawn * 255
    soft[3, 2, 1] = 128  # an anti-aliased edge
    Image.fromarray(soft, mode="LA").save(tmp_path / "soft.png")
    with pytest.raises(DataError, match=r"soft\.png.*alpha channel is not binary: values \{0, 128, 255\}"):
        read_mask(tmp_path / "soft.png")


def test_the_datalist_scan_reads_alpha_masks_as_training_does(xray_copy, tmp_path):
    from spine_monai.transforms import LoadStructureMasks

    mask_path = xray_copy / "Normal/ID (1)/AP/Ap_Vertebra.png"
    drawn = read_mask(mask_path)
    la = np.stack([np.zeros(drawn.shape, np.uint8), (drawn * 255).astype(np.uint8)], axis=-1)
    Image.fromarray(la, mode="LA").save(mask_path)
    soft_path = xray_copy / "Normal/ID (2)/AP/Ap_Vertebra.png"
    soft = np.stack([np.zeros(drawn.shape, np.uint8), (drawn * 200).astype(np.uint8)], axis=-1)
    soft[0, 0, 1] = 255
    Image.fromarray(soft, mode="LA").save(soft_path)

    out = tmp_path / "dl.json"
    assert main(["datalist", "xray", "--root", str(xray_copy), "--out", str(out), "--views", "AP", "--folds", "2"]) == 1
    dl = json.loads(out.read_text())
    assert [
        (p["path"].endswith("ID (2)/AP/Ap_Vertebra.png"), "alpha channel is not binary" in p["reason"])
        for p in dl["problems"]
    ] == [(True, True)]
    record = next(r for r in dl["training"] if r["patient"] == "Normal/ID (1)")
    loaded = LoadStructureMasks()([xray_copy / record["Ap_Vertebra"]], expected_size=drawn.shape)
    assert np.array_equal(np.asarray(loaded[0]).astype(bool), drawn)
