"""Batched augmentation: the geometry matches MONAI's Affine, labels stay aligned, noise per sample, runs repeat;
the training pipeline's random part runs without metadata."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO
from monai.data import MetaTensor
from monai.transforms import Affine, Compose

from spine_monai.transforms import (
    AugmentBatch,
    BinarizeMasks,
    BinarizeMasksd,
    RandGaussianNoiseBatch,
    RandGaussianNoiseBatchd,
    RandSpatialBatch,
    RandSpatialBatchd,
    UntrackedCompose,
)


def _blobs(n: int = 4, shape: tuple[int, int] = (64, 48)) -> torch.Tensor:
    x = torch.zeros(n, 1, *shape)
    x[:, :, 20:40, 10:30] = 1.0
    x[:, :, 45:50, 30:44] = 0.5
    return x


@pytest.mark.parametrize(
    "params",
    [{"rotate_range": 0.3}, {"translate_range": (5.0, 3.0)}, {"scale_range": (0.2, 0.1)}, {"shear_range": (0.2, 0.1)}],
)
def test_each_sample_matches_monai_affine_with_its_own_draw(params):
    x = _blobs()
    aug = RandSpatialBatch(prob=1.0, **params)
    aug.set_random_state(3)
    out = aug(x)
    draw = aug._draw
    for i in range(len(x)):
        affine = torch.eye(3, dtype=torch.float64)
        affine[:2, :2] = torch.as_tensor(draw["matrix"][i])
        affine[:2, 2] = torch.as_tensor(draw["shift"][i])
        expected = Affine(affine=affine, padding_mode="zeros", image_only=True)(x[i])
        assert torch.allclose(out[i], expected.as_tensor(), atol=1e-4)
    assert not torch.allclose(out[0], out[1]), "samples of one batch must get their own transform"


@pytest.mark.parametrize("axis", [0, 1])
def test_flip_and_identity_are_exact(axis):
    x = _blobs()
    assert torch.equal(RandSpatialBatch(prob=0.0)(x), x)
    assert torch.allclose(RandSpatialBatch(prob=0.0, flip_prob=1.0, flip_axis=axis)(x), x.flip(2 + axis), atol=1e-5)


def test_elastic_moves_pixels_smoothly_and_by_the_magnitude():
    x = torch.zeros(2, 1, 128, 96)
    x[:, :, ::8, :] = 1.0  # horizontal rules: their rows show the vertical displacement
    aug = RandSpatialBatch(prob=0.0, elastic_prob=1.0, elastic_spacing=32, elastic_magnitude=(3.0, 3.0))
    aug.set_random_state(0)
    out = aug(x)
    assert not torch.allclose(out, x)
    assert len(aug._draw["elastic"]) == 2
    grid = aug.grid()
    identity = RandSpatialBatch(prob=0.0)
    identity.randomize(2, (128, 96))
    shift_px = (grid - identity.grid()) * torch.tensor([96 / 2, 128 / 2])
    assert 1.0 < shift_px.abs().max() < 20.0
    # neighbouring pixels move together (a smooth field, not noise)
    assert (shift_px[:, 1:] - shift_px[:, :-1]).abs().max() < 1.0


@pytest.mark.parametrize(("controls", "size"), [((8, 6), (384, 256)), ((3, 2), (17, 64)), ((2, 2), (2, 5))])
def test_separable_elastic_field_is_torch_bicubic(controls, size):
    from spine_monai.transforms.batch import _bicubic_matrix

    offsets = torch.randn(3, 2, *controls, generator=torch.Generator().manual_seed(0))
    rows = _bicubic_matrix(controls[0], size[0], torch.device("cpu"))
    cols = _bicubic_matrix(controls[1], size[1], torch.device("cpu"))
    expected = torch.nn.functional.interpolate(offsets, size=size, mode="bicubic", align_corners=True)
    assert torch.allclose(rows @ offsets @ cols.T, expected, atol=1e-5)


def test_labels_follow_their_image_and_stay_binary():
    image = _blobs(6)
    batch = {"image": image, "label": torch.cat([image > 0.9, image > 0.4], dim=1).float()}
    aug = Compose(
        [
            RandSpatialBatchd(
                keys=["image", "label"],
                mode=["bilinear", "bilinear"],
                prob=1.0,
                rotate_range=0.35,
                scale_range=0.15,
                translate_range=4.0,
                elastic_prob=0.5,
                elastic_spacing=16,
                flip_prob=0.5,
            ),
            BinarizeMasksd(keys="label", threshold=[0.5, 0.3], channel_dim=1),
        ]
    )
    prepare = AugmentBatch(aug, seed=7)
    out_image, out_label = prepare(batch, device="cpu")
    assert type(out_image) is torch.Tensor and out_label.shape == (6, 2, 64, 48)
    assert set(out_label.unique().tolist()) <= {0.0, 1.0}
    # the bright blob's label is where the transformed image is bright
    bright = out_image > 0.9
    assert (out_label[:, :1][bright] == 1).float().mean() > 0.97
    assert not torch.equal(out_image, image)
    again = AugmentBatch(aug, seed=7)(batch, device="cpu")
    assert torch.equal(again[0], out_image) and torch.equal(again[1], out_label)


def test_nearest_mode_keeps_label_values():
    labels = torch.randint(0, 12, (3, 1, 40, 40)).float()
    aug = RandSpatialBatchd(keys=["image", "label"], mode=["bilinear", "nearest"], prob=1.0, rotate_range=0.5)
    out = aug({"image": labels.clone(), "label": labels})
    assert set(out["label"].unique().tolist()) <= set(range(12))


def test_elastic_field_goes_to_the_samples_that_drew_it():
    aug = RandSpatialBatch(prob=1.0, rotate_range=0.3, elastic_prob=0.5, elastic_spacing=16, flip_prob=0.5)
    aug.set_random_state(1)
    aug.randomize(8, (48, 40))
    elastic = aug._draw["elastic"]
    assert 0 < len(elastic) < 8
    grid = aug.grid()
    assert grid.shape == (8, 48, 40, 2)
    aug._draw.update(grid=None, elastic=elastic[:0], offsets=aug._draw["offsets"][:0])
    rigid = aug.grid()
    for i in range(8):
        assert torch.equal(grid[i], rigid[i]) != (i in elastic), i


def test_binarize_batch_thresholds_per_channel():
    x = torch.tensor([[0.4, 0.6], [0.25, 0.35]]).view(1, 2, 1, 2).repeat(3, 1, 1, 1)
    out = BinarizeMasks([0.5, 0.3], channel_dim=1)(x)
    assert out[:, 0].flatten().tolist() == [0.0, 1.0] * 3
    assert out[:, 1].flatten().tolist() == [0.0, 1.0] * 3
    assert torch.equal(out, (x > torch.tensor([0.5, 0.3]).view(1, 2, 1, 1)).float())


def test_binarize_keeps_type_dtype_and_metadata():
    x = torch.tensor([[[0.3, 0.6]], [[0.1, 0.25]]], dtype=torch.float64)
    meta = MetaTensor(x, meta={"filename_or_obj": "Lat_Vertebra.png"})
    out = BinarizeMasks([0.5, 0.2])(meta)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "Lat_Vertebra.png"
    assert out.dtype == torch.float64 and out.as_tensor().tolist() == [[[0.0, 1.0]], [[0.0, 1.0]]]
    assert x.tolist() == [[[0.3, 0.6]], [[0.1, 0.25]]], "the input is left as it was"
    counts = BinarizeMasks(100)(torch.tensor([[[50, 150]]], dtype=torch.uint8))
    assert counts.dtype == torch.uint8 and counts.tolist() == [[[0, 1]]]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="B, C, H, W"):
        RandSpatialBatch()(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="prob"):
        RandSpatialBatch(prob=1.5)
    with pytest.raises(ValueError, match="flip_axis"):
        RandSpatialBatch(flip_axis=2)
    with pytest.raises(KeyError, match="label"):
        AugmentBatch(RandSpatialBatchd(keys="image"))({"image": torch.zeros(1, 1, 8, 8)})


def test_batch_noise_per_sample_like_monai():
    x = torch.zeros(400, 2, 16, 16)
    noise = RandGaussianNoiseBatch(prob=0.3, mean=0.1, std=0.5)
    noise.set_random_state(0)
    out = noise(x)
    assert torch.equal(x, torch.zeros_like(x)), "the input was changed in place"
    noised = (out != 0).flatten(1).any(1)
    assert 0.22 < noised.float().mean() < 0.38
    assert torch.equal(torch.as_tensor(noise._draw["index"]), torch.nonzero(noised).flatten())
    # each noised sample: its own standard deviation, drawn uniformly from [0, std] (MONAI's sample_std)
    stds = out[noised].flatten(1).std(1)
    assert torch.allclose(stds, torch.as_tensor(noise._draw["std"], dtype=torch.float32), rtol=0.1, atol=1e-3)
    assert noise._draw["std"].max() <= 0.5 and stds.min() < 0.2 and stds.max() > 0.4
    assert out[noised].mean() == pytest.approx(0.1, abs=0.01)
    # the same seed repeats; randomize=False reuses the draw for another tensor of the batch
    again = RandGaussianNoiseBatch(prob=0.3, mean=0.1, std=0.5)
    again.set_random_state(0)
    assert torch.equal(again(x), out) and torch.equal(again(x, randomize=False), out)
    fixed = RandGaussianNoiseBatch(prob=1.0, std=0.2, sample_std=False)
    assert fixed(torch.zeros(8, 1, 64, 64)).flatten(1).std(1).sub(0.2).abs().max() < 0.02
    assert RandGaussianNoiseBatch(prob=0.0)(x) is x


def test_batch_noise_dict_and_bad_input():
    data = {"image": torch.zeros(16, 1, 8, 8), "other": torch.zeros(16, 1, 8, 8), "label": torch.ones(16, 1, 8, 8)}
    out = RandGaussianNoiseBatchd(keys=["image", "other"], prob=0.5, std=0.3).set_random_state(1)(data)
    assert torch.equal(out["image"], out["other"]), "one draw per batch, applied to every key"
    assert not torch.equal(out["image"], data["image"]) and torch.equal(out["label"], data["label"])
    with pytest.raises(ValueError, match="prob"):
        RandGaussianNoiseBatch(prob=2.0)
    with pytest.raises(ValueError, match="std"):
        RandGaussianNoiseBatch(std=-1.0)
    with pytest.raises(ValueError, match="batch"):
        RandGaussianNoiseBatch(prob=1.0)(torch.zeros(8, 8))
    big = RandGaussianNoiseBatch(prob=1.0)
    big.randomize(8)
    with pytest.raises(ValueError, match="does not match the last random draw"):
        big(torch.zeros(4, 1, 8, 8), randomize=False)


def test_untracked_compose_is_the_uncached_random_part():
    from monai.data import CacheDataset, MetaTensor, get_track_meta
    from monai.transforms import EnsureTyped, Lambdad, RandGaussianNoised

    seen = []
    pipeline = Compose(
        [
            EnsureTyped(keys="image"),
            UntrackedCompose([Lambdad("image", lambda x: seen.append(1) or x), RandGaussianNoised("image", prob=1.0)]),
        ]
    )
    data = [{"image": MetaTensor(torch.zeros(1, 8, 8)), "label": MetaTensor(torch.ones(1, 8, 8))} for _ in range(2)]
    dataset = CacheDataset(data, pipeline, progress=False, copy_cache=False)
    assert not seen, "the random part was cached"
    assert all(type(item["image"]) is MetaTensor for item in dataset._cache), "the cache keeps its metadata"
    first, label = dataset[0]["image"], dataset[0]["label"]
    assert type(first) is torch.Tensor and len(seen) == 2 and not torch.equal(first, torch.zeros(1, 8, 8))
    assert type(label) is torch.Tensor and torch.equal(label, torch.ones(1, 8, 8)), "untouched keys are plain too"
    assert get_track_meta(), "tracking is back on afterwards"
    pipeline.set_random_state(5)
    a = dataset[1]["image"]
    pipeline.set_random_state(5)
    assert torch.equal(a, dataset[1]["image"]), "seeding reaches the nested transforms"
    failing = UntrackedCompose([Lambdad("image", lambda x: 1 / 0)])
    with pytest.raises(RuntimeError):
        failing({"image": torch.zeros(1)})
    assert get_track_meta(), "tracking is back on after an error"


def test_training_workers_drop_metadata_and_keep_seeding():
    from monai.data import CacheDataset, DataLoader, MetaTensor, get_track_meta
    from monai.transforms import RandGaussianNoised

    from spine_monai.workflow import untracked_worker_init

    data = [{"image": MetaTensor(torch.zeros(1, 8, 8))} for _ in range(4)]

    def batches():
        dataset = CacheDataset(data, RandGaussianNoised(keys="image", prob=1.0), progress=False)
        loader = DataLoader(dataset, batch_size=2, num_workers=1, worker_init_fn=untracked_worker_init)
        torch.manual_seed(0)
        return [b["image"] for b in loader]

    first, second = batches(), batches()
    assert all(type(b) is torch.Tensor for b in first), "the random part ran with metadata"
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True)), "workers lost MONAI's seeding"
    assert not torch.equal(first[0][0], first[0][1])
    assert get_track_meta(), "the main process must keep its metadata"


def test_light_training_loaders_use_workers_only_beside_a_gpu():

    from spine_monai.workflow import light_loader_workers, read_bundle_config

    assert light_loader_workers(4, "cpu") == 0
    assert light_loader_workers(4, torch.device("cuda:0")) == 4
    with pytest.raises(ValueError, match="num_workers"):
        light_loader_workers(-1, "cuda")
    for bundle in ("spine_xray_ap_seg", "spine_xray_lat_seg", "spine_mri_seg"):
        parser = read_bundle_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
        parser.update({"num_workers": 3, "device": "$torch.device('cpu')"})
        assert parser.get_parsed_content("train#dataloader#num_workers") == 0
        assert parser.get_parsed_content("train#dataloader#persistent_workers") is False
        assert parser.get_parsed_content("validate#dataloader#num_workers") == 3
        parser["device"] = "$torch.device('cuda:0')"
        assert parser.get_parsed_content("train#dataloader#num_workers") == 3
        assert parser.get_parsed_content("train#dataloader#persistent_workers") is True
