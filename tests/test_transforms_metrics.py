from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Resize, SpatialPadd
from PIL import Image

from spine_monai.data.io import OVERLAY_COMPRESS_LEVEL, write_overlay, write_png_atomic
from spine_monai.errors import DataError
from spine_monai.losses import MultiLabelDiceBCELoss, gap_pixels
from spine_monai.metrics import confusion_counts, disk_dilate, rates_from_counts, tolerance_dice
from spine_monai.transforms import (
    BinarizeMasks,
    LoadRadiographd,
    LoadStructureMasksd,
    ResizeMasksToFit,
    ResizeToFit,
    ResizeToFitd,
    ThinLines,
    fit_size,
    overlay_masks,
)
from spine_monai.transforms.io import PALETTE
from spine_monai.workflow import read_bundle_config, run_config_files


def test_fit_size_keeps_aspect():
    assert fit_size((2900, 1900), (384, 256)) == (384, 252)
    assert fit_size((2000, 2000), (384, 256)) == (256, 256)
    assert fit_size((576, 384), (384, 256)) == (384, 256)


@pytest.mark.parametrize("shape", [(2900, 1900), (576, 384)])
def test_one_pixel_line_survives_downsampling(shape):
    """Max-pool style downsampling keeps a 1-px line continuous; nearest or area>=0.5 erase it."""
    masks = np.zeros((3, *shape), np.float32)
    masks[0, :, shape[1] // 2 + 1] = 1.0  # vertical 1-px line, thin rule
    masks[1, 101, :] = 1.0  # horizontal 1-px line, thin rule
    masks[2] = masks[0]  # vertical line, thick rule
    vertical, horizontal, thick = ResizeMasksToFit((384, 256), coverage=[0.0, 0.0, 0.5])(torch.as_tensor(masks))
    assert vertical.shape[-2] == 384
    assert (vertical.sum(dim=1) >= 1).all(), "vertical line has gaps"
    assert (vertical.sum(dim=0) > 0).sum() <= 2, "vertical line got wider than 2 px"
    assert (horizontal.sum(dim=0) >= 1).all(), "horizontal line has gaps"
    assert (horizontal.sum(dim=1) > 0).sum() <= 2
    if shape[0] > 1000:
        assert thick.sum() == 0  # the area >= 0.5 rule drops it at 7.5x downsampling
    nearest = torch.nn.functional.interpolate(torch.as_tensor(masks)[None], size=vertical.shape, mode="nearest")[0]
    assert nearest[0].sum() < vertical.sum() or shape[0] < 1000


def test_resize_to_fit_is_inverted_to_original_size(xray_root):
    p = xray_root / "Normal" / "ID (1)" / "AP"
    pre = Compose(
        [
            LoadRadiographd("image"),
            LoadStructureMasksd("label"),
            ResizeToFitd("image", (384, 256)),
            SpatialPadd("image", (384, 256)),
        ]
    )
    d = pre({"image": str(p / "AP.jpg"), "label": [str(p / "Ap_Vertebra.png")]})
    assert d["image"].shape == (1, 384, 256)
    assert d["label"].shape == (1, 576, 384)
    d["pred"] = d["image"].clone()
    back = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(d)
    assert back["pred"].shape == (1, 576, 384)


@pytest.mark.parametrize(("shape", "sigma"), [((290, 190), None), ((290, 190), 1.5), ((50, 30), None)])
def test_resize_to_fit_resizes_as_monai_resize(shape, sigma):
    """On a CPU the anti-aliasing Gaussian is SciPy's, with Resize's kernels: the same output to float rounding,
    the same trace, so Invertd undoes it the same way."""
    film = MetaTensor(torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)) * 1000)
    size = fit_size(shape, (96, 64))
    ours = ResizeToFit((96, 64))(film, anti_aliasing_sigma=sigma)
    ref = Resize(size, mode="bilinear", anti_aliasing=True, anti_aliasing_sigma=sigma, dtype=torch.float32)(film)
    assert ours.shape == ref.shape == (2, *size)
    torch.testing.assert_close(ours.as_tensor(), ref.as_tensor(), rtol=1e-6, atol=1e-3)
    (op,) = ours.applied_operations
    assert op["orig_size"] == ref.applied_operations[0]["orig_size"] and op["extra_info"]["new_dim"] == 0
    if sigma is None and shape[0] > size[0]:
        # the Gaussian did smooth: without it the downsampled film differs far beyond rounding
        plain = Resize(size, mode="bilinear", anti_aliasing=False, dtype=torch.float32)(film)
        assert (plain.as_tensor() - ours.as_tensor()).abs().max() > 10


def test_load_masks_reports_every_bad_mask(tmp_path):
    Image.new("L", (10, 20)).save(tmp_path / "img.png")
    Image.new("1", (10, 20)).save(tmp_path / "a.png")
    Image.new("1", (11, 20)).save(tmp_path / "b.png")
    d = LoadRadiographd("image")({"image": str(tmp_path / "img.png")})
    d["label"] = [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    with pytest.raises(DataError) as e:
        LoadStructureMasksd("label")(d)
    reasons = [(p.path.rsplit("/", 1)[-1], p.reason) for p in e.value.problems]
    assert reasons[0][0] == "b.png" and "mask size 11x20 differs" in reasons[0][1]
    assert reasons[1] == ("c.png", "mask file not found")


def test_thin_lines_redraws_wide_lines_at_nominal_width():
    pred = torch.zeros(2, 40, 40)
    pred[0, 5:35, 15:22] = 1  # a 7-px wide "line", as upsampling from low resolution gives
    pred[1, 5:35, 15:22] = 1  # a thick structure, left alone
    out = ThinLines(channels=[0], width=3)(pred)
    widths = out[0, 10:30].sum(dim=1)
    assert (widths == 3).all(), widths
    assert out[0, 10:30, 18].all()  # centred on the original line
    assert torch.equal(out[1], pred[1])


def test_binarize_per_channel():
    x = torch.tensor([[[0.3, 0.6]], [[0.3, 0.6]]])
    assert BinarizeMasks([0.5, 0.2])(x).tolist() == [[[0.0, 1.0]], [[1.0, 1.0]]]


def test_rates_and_empty_channels():
    pred = torch.zeros(1, 2, 4, 4)
    gt = torch.zeros(1, 2, 4, 4)
    pred[0, 0, :2] = 1
    gt[0, 0, 1:3] = 1
    r = rates_from_counts(confusion_counts(pred, gt))
    assert r["Dice"][0, 0].item() == pytest.approx(0.5)
    assert r["Jaccard"][0, 0].item() == pytest.approx(1 / 3)
    assert r["FP"][0, 0].item() == pytest.approx(4 / 8)  # FP=4, TN=4
    assert r["FN"][0, 0].item() == pytest.approx(0.5)
    assert r["Dice"][0, 1].item() == 1.0 and r["FP"][0, 1].item() == 0.0  # empty in both: perfect


def test_tolerance_dice_forgives_small_shifts():
    gt = torch.zeros(1, 1, 64, 64)
    gt[0, 0, :, 30] = 1
    shifted = torch.roll(gt, 2, dims=-1)
    plain = rates_from_counts(confusion_counts(shifted, gt))["Dice"].item()
    tol = tolerance_dice(shifted, gt, tolerance=2).item()
    assert plain == 0.0 and tol > 0.6
    far = torch.roll(gt, 12, dims=-1)
    assert tolerance_dice(far, gt, tolerance=2).item() == 0.0
    assert disk_dilate(gt, 2)[0, 0, 10].sum().item() == 5


def test_multilabel_loss_is_per_channel_sigmoid():
    torch.manual_seed(0)
    target = (torch.rand(2, 3, 32, 32) > 0.7).float()
    target[:, 1] = target[:, 0]  # overlapping channels must not compete
    loss = MultiLabelDiceBCELoss(channel_weights=[1, 1, 3], pos_weight=[1, 1, 5], skeleton_channels=[2])
    perfect = loss(target * 20 - 10, target)
    bad = loss(-(target * 20 - 10), target)
    assert perfect < 0.2 < bad
    logits = torch.zeros(2, 3, 32, 32, requires_grad=True)
    loss(logits, target).backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="channel weights"):
        MultiLabelDiceBCELoss(channel_weights=[1, 1])(logits, target)


def test_gap_weight_falls_on_the_background_between_bodies():
    """Two bodies 4 px apart: the gap between them is found, the background around them is not."""
    target = torch.zeros(1, 2, 40, 30)
    target[0, 0, 5:15, 8:22] = 1
    target[0, 0, 19:30, 8:22] = 1
    target[0, 1, 5:30, 8:22] = 1  # the same column without a gap: nothing to find
    gaps = gap_pixels(target, radius=3)
    assert gaps[0, 0, 15:19, 8:22].all() and gaps[0, 0].sum() == 4 * 14
    assert gaps[0, 1].sum() == 0
    # A prediction that bridges the gap costs more with the gap weighted, everything else equal.
    bridged = torch.where(target[:, :1] > 0, 10.0, -10.0)
    bridged[0, 0, 15:19, 8:22] = 10.0
    plain = MultiLabelDiceBCELoss()(bridged, target[:, :1])
    weighted = MultiLabelDiceBCELoss(gap_channels=[0], gap_weight=10.0, gap_radius=3)(bridged, target[:, :1])
    assert weighted > plain * 5
    exact = torch.where(target[:, :1] > 0, 10.0, -10.0)
    assert MultiLabelDiceBCELoss(gap_channels=[0], gap_weight=10.0)(exact, target[:, :1]) < 1e-3


def test_local_contrast_spreads_a_dim_region_and_keeps_type():
    from monai.data import MetaTensor

    # Faint anatomy (smooth texture of 0.03 amplitude) in the dark half of a film whose other half is bright.
    from scipy.ndimage import gaussian_filter

    from spine_monai.transforms import LocalContrast, LocalContrastd

    texture = gaussian_filter(np.random.default_rng(0).standard_normal((512, 192)), 6)
    img = np.where(np.arange(512)[:, None] < 256, 0.05, 0.85) + 0.03 * texture / np.abs(texture).max()
    img = img[None].astype(np.float32)
    out = LocalContrast()(img)
    assert out.dtype == np.float32 and out.shape == img.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert out[0, :256].std() > 2 * img[0, :256].std()
    assert LocalContrast(clip_limit=0.0)(img) is img
    meta = MetaTensor(torch.as_tensor(img, dtype=torch.float32), meta={"filename_or_obj": "AP.jpg"})
    d = LocalContrastd("image")({"image": meta})
    assert isinstance(d["image"], MetaTensor) and d["image"].meta["filename_or_obj"] == "AP.jpg"
    with pytest.raises(ValueError, match=r"needs an image in \[0, 1\]"):
        LocalContrast()(img * 255)


def test_overlay_outlines_truth():
    img = np.zeros((20, 20))
    pred = np.zeros((1, 20, 20))
    truth = np.zeros((1, 20, 20))
    truth[0, 5:15, 5:15] = 1
    rgb = overlay_masks(img, pred, truth)
    assert rgb.shape == (20, 20, 3)
    assert rgb[5, 10].sum() > 0 and rgb[10, 10].sum() == 0  # outline drawn, inside untouched


def test_overlay_is_written_losslessly_with_fast_compression(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (60, 40, 3), dtype=np.uint8)
    write_overlay(tmp_path / "a" / "AP_overlay.png", rgb)
    with Image.open(tmp_path / "a" / "AP_overlay.png") as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["AP_overlay.png"]  # no temporary file left
    # written at zlib's fastest level: the same bytes as PIL writes with it
    write_png_atomic(tmp_path / "fast.png", Image.fromarray(rgb), compress_level=1)
    assert OVERLAY_COMPRESS_LEVEL == 1
    assert (tmp_path / "a" / "AP_overlay.png").read_bytes() == (tmp_path / "fast.png").read_bytes()
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 array, got float32"):
        write_overlay(tmp_path / "b.png", rgb.astype(np.float32))


def test_fixed_noise_level_identity_and_bad_levels():
    from conftest import REPO, raises_in_chain
    from monai.transforms import Identityd, RandGaussianNoised

    from spine_monai.transforms import fixed_noise

    image = torch.full((1, 128, 128), 0.5)
    assert isinstance(fixed_noise("image", 0.0), Identityd)
    assert torch.equal(fixed_noise("image", 0)({"image": image})["image"], image)
    noisy = fixed_noise("image", 0.1)
    assert isinstance(noisy, RandGaussianNoised)
    noisy.set_random_state(0)
    first, second = noisy({"image": image})["image"], noisy({"image": image})["image"]
    assert abs(float((first - image).std()) - 0.1) < 0.005, "every sample gets the set level"
    assert abs(float((second - image).std()) - 0.1) < 0.005 and not torch.equal(first, second)
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise_std must be a finite number >= 0"):
            fixed_noise("image", bad)
    parser = read_bundle_config(run_config_files(REPO / "bundles" / "spine_mri_seg" / "configs", "evaluate.json"))
    parser["noise_std"] = -0.1
    with raises_in_chain(ValueError, match="noise_std must be a finite number >= 0, got -0.1"):
        parser.get_parsed_content("validate#preprocessing")


def test_every_overlay_carries_a_legend_of_its_colours():
    img = np.tile(np.linspace(0.0, 1.0, 500), (700, 1))
    pred = np.zeros((2, 700, 500))
    pred[0, 300:400, 200:300] = 1
    plain = overlay_masks(img, pred)
    with_legend = overlay_masks(img, pred, pred, names=["Ap_Vertebra", "Ap_Pedicle"])
    corner = with_legend[:60, :200].reshape(-1, 3)
    for colour in PALETTE[:2].astype(np.uint8):
        assert (corner == colour).all(axis=1).sum() >= 25, colour  # a swatch per structure
    assert (corner > 200).all(axis=1).sum() >= 20  # white text on the box
    assert np.array_equal(with_legend[350, 250], overlay_masks(img, pred, pred)[350, 250])  # the film unchanged
    assert not np.array_equal(plain[:60, :200], with_legend[:60, :200])  # drawn only when names are given
