"""The bundles' layout and cache options, channels_last and cache_on_device: each must train the same model.

Channels last is the default on a CPU (faster there, ``docs/performance.md``); whether either option speeds training
on a GPU is for ``make bench`` there. Here each option's first steps must give the losses of the plain training
(channels first, host cache): up to float rounding for channels last (another order of summation), exactly for the
cache on a CPU (where it already is). The segmentation bundles have both options, the classification bundle
channels_last alone (its weights; the views are split from the input inside the network). The CUDA cases run where a
GPU is (``pipelines/gpu_check.sh``); there AMP is on, as the bundles set it, and the tolerance is that of float16.
"""

from __future__ import annotations

import pytest
import torch
from conftest import REPO
from ignite.engine import Events
from monai.transforms import Compose, ToDeviced
from monai.utils import set_determinism

from spine_monai.data import build_mri_datalist, write_datalist
from spine_monai.synthetic.mri import write_mri_dataset
from spine_monai.transforms import AugmentBatch, RandSpatialBatchd
from spine_monai.workflow import (
    channels_last_by_default,
    device_cache,
    light_loader_workers,
    loader_workers,
    memory_format,
    read_bundle_config,
)

SEG_BUNDLES = ("spine_xray_ap_seg", "spine_xray_lat_seg", "spine_mri_seg")
ITERATIONS = 3
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
# Relative tolerance on the losses of an option against the plain training's, by device.
RTOL = {"cpu": 1e-4, "cuda": 1e-2}
# Channels first and the cache on the host: the training each option is compared with.
PLAIN = {"channels_last": False, "cache_on_device": False}


def test_memory_format_choices():
    assert memory_format(False) is torch.preserve_format
    assert memory_format("false") is torch.preserve_format
    assert memory_format(True) is torch.channels_last
    assert memory_format("true", spatial_dims=3) is torch.channels_last_3d
    with pytest.raises(ValueError, match="spatial_dims=1"):
        memory_format(True, spatial_dims=1)
    with pytest.raises(ValueError, match="boolean"):
        memory_format("sometimes")


def test_channels_last_is_the_default_on_a_cpu_only():
    assert channels_last_by_default("cpu") and channels_last_by_default(torch.device("cpu"))
    assert not channels_last_by_default("cuda:0") and not channels_last_by_default(torch.device("cuda", 1))
    for bundle in SEG_BUNDLES:
        for device, layout in (("cpu", torch.channels_last), ("cuda:0", torch.preserve_format)):
            parser = read_bundle_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
            parser.update({"device": f"$torch.device('{device}')"})
            assert parser.get_parsed_content("memory_format") is layout, (bundle, device)
            assert parser.get_parsed_content("train#trainer#to_kwargs") == {"memory_format": layout}, (bundle, device)
            parser["channels_last"] = "false"
            assert parser.get_parsed_content("memory_format", lazy=False) is torch.preserve_format, (bundle, device)
    parser = read_bundle_config(str(REPO / "bundles" / "spine_xray_cls" / "configs" / "train.json"))
    assert parser.get_parsed_content("memory_format") is torch.channels_last
    parser.update({"device": "$torch.device('cuda:0')"})
    assert parser.get_parsed_content("memory_format", lazy=False) is torch.preserve_format


def test_augment_batch_hands_the_network_the_layout_asked_for():
    batch = {"image": torch.rand(2, 2, 16, 12), "label": (torch.rand(2, 3, 16, 12) > 0.5).float()}

    def augment():
        return AugmentBatch(RandSpatialBatchd(["image", "label"], prob=1.0, rotate_range=0.3), seed=4)

    plain = augment()(batch, torch.device("cpu"))
    nhwc = augment()(batch, torch.device("cpu"), memory_format=torch.channels_last)
    # The image is the network's input; the label stays (B, C, H, W) for the loss's per-channel sums.
    assert nhwc[0].is_contiguous(memory_format=torch.channels_last) and not nhwc[0].is_contiguous()
    assert nhwc[1].is_contiguous()
    for a, b in zip(plain, nhwc, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    kept = augment()(batch, torch.device("cpu"), memory_format=torch.preserve_format)
    assert all(t.is_contiguous() for t in kept)


def test_device_cache_and_its_loaders():
    assert device_cache(["image"], "cpu", False) == []
    (move,) = device_cache(["image", "label"], "cpu", "true")
    assert isinstance(move, ToDeviced) and list(move.keys) == ["image", "label"]
    assert loader_workers(3, False) == 3 and loader_workers(3, "true") == 0
    assert light_loader_workers(3, "cuda:0", cache_on_device=True) == 0
    with pytest.raises(ValueError, match="num_workers"):
        loader_workers(-1)
    for bundle in SEG_BUNDLES:
        parser = read_bundle_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
        parser.update({"num_workers": 3, "device": "$torch.device('cuda:0')", "cache_on_device": "true"})
        # Forked workers cannot read a cache held in CUDA memory.
        assert parser.get_parsed_content("train#dataloader#num_workers") == 0, bundle
        assert parser.get_parsed_content("validate#dataloader#num_workers") == 0, bundle
        assert parser.get_parsed_content("train#dataloader#persistent_workers") is False, bundle
        moves = [t for t in parser.get_parsed_content("train#transforms").transforms if isinstance(t, ToDeviced)]
        assert [torch.device(m.converter.device) for m in moves] == [torch.device("cuda:0")], bundle


@pytest.fixture(scope="module")
def datasets(xray_root, datalist, tmp_path_factory):
    base = tmp_path_factory.mktemp("device_options")
    mri_root = base / "mri"
    write_mri_dataset(mri_root, cases=4, seed=5, shape=(6, 96, 96), workers=1)
    mri_list = base / "mri_datalist.json"
    write_datalist(mri_list, build_mri_datalist(mri_root, folds=2, test_fraction=0.25, seed=0))
    return {
        "spine_xray_ap_seg": {"dataset_dir": str(xray_root), "datalist": str(datalist)},
        "spine_mri_seg": {
            "dataset_dir": str(mri_root),
            "datalist": str(mri_list),
            "in_plane_spacing": [3.0, 3.0],
            "patch_size": [64, 64],
            "slices_per_volume": 2,
        },
    }


def _train(bundle: str, overrides: dict, out, device: str = "cpu") -> tuple[list[float], object, list[torch.Tensor]]:
    """``ITERATIONS`` steps of the bundle's trainer on ``device``; the losses, the trainer and the network's inputs."""
    parser = read_bundle_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    parser.update(
        {
            "progress_bar": False,
            "num_workers": 0,
            "batch_size": 2,
            "output_dir": str(out),
            "device": f"$torch.device('{device}')",
            "train#trainer#max_epochs": 1,
            "train#trainer#epoch_length": ITERATIONS,
            **overrides,
        }
    )
    set_determinism(seed=0)
    trainer = parser.get_parsed_content("train#trainer")
    inputs: list[torch.Tensor] = []
    # Training steps only: the run also validates once, after its last epoch.
    trainer.network.register_forward_pre_hook(lambda module, args: inputs.append(args[0]) if module.training else None)
    losses: list[float] = []

    def record(engine) -> None:
        # The classifier's trainer decollates its output into a list of items, each with the batch's loss.
        output = engine.state.output
        losses.append(float((output[0] if isinstance(output, list) else output)["loss"]))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    trainer.run()
    set_determinism(seed=None)
    return losses, trainer, inputs


@pytest.fixture(scope="module")
def plain_losses(datasets, tmp_path_factory):
    """The plain training's losses by (bundle, device), trained once for both options' tests."""
    cache: dict[tuple[str, str], list[float]] = {}

    def losses(bundle: str, device: str) -> list[float]:
        if (bundle, device) not in cache:
            out = tmp_path_factory.mktemp("plain")
            cache[bundle, device] = _train(bundle, {**datasets[bundle], **PLAIN}, out, device)[0]
        return cache[bundle, device]

    return losses


def _nhwc(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last)


def _assert_nhwc_weights(network: torch.nn.Module) -> None:
    """Every convolution's weight is channels-last; those with one input channel or a 1x1 kernel are both layouts at
    once."""
    convs = [m.weight for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(_nhwc(w) for w in convs)
    assert not any(w.is_contiguous() for w in convs if w.shape[1] > 1 and w.shape[2:].numel() > 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bundle", ["spine_xray_ap_seg", "spine_mri_seg"])
def test_channels_last_trains_the_same_model(bundle, device, datasets, plain_losses, tmp_path):
    base = plain_losses(bundle, device)
    overrides = {**datasets[bundle], **PLAIN, "channels_last": "true"}
    losses, trainer, inputs = _train(bundle, overrides, tmp_path / "nhwc", device)
    _assert_nhwc_weights(trainer.network)
    assert len(inputs) == ITERATIONS and all(_nhwc(x) for x in inputs)
    assert not any(x.is_contiguous() for x in inputs if x.shape[1] > 1)
    # Another layout sums in another order; three optimizer steps keep the difference at float rounding.
    assert losses == pytest.approx(base, rel=RTOL[device])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bundle", ["spine_xray_ap_seg", "spine_mri_seg"])
def test_cache_on_device_trains_the_same_model(bundle, device, datasets, plain_losses, tmp_path):
    base = plain_losses(bundle, device)
    overrides = {**datasets[bundle], **PLAIN, "cache_on_device": True}
    losses, trainer, _ = _train(bundle, overrides, tmp_path / "cached", device)
    dataset = trainer.data_loader.dataset
    chain = dataset.transform.transforms if isinstance(dataset.transform, Compose) else ()
    assert any(isinstance(t, ToDeviced) for t in chain), "the cached chain does not end on the device"
    assert all(item[k].device.type == device for item in dataset._cache for k in ("image", "label"))
    if device == "cpu":
        assert losses == base
    else:
        assert losses == pytest.approx(base, rel=RTOL[device])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("vertebra_level", [False, True], ids=["films", "vertebrae"])
def test_classifier_channels_last_trains_the_same_model(vertebra_level, device, datasets, xray_root, tmp_path):
    overrides = {
        **datasets["spine_xray_ap_seg"],
        "spatial_size": [192, 128],
        "vertebra_level": vertebra_level,
        "patch_size": 24,
        "mask_dir": str(xray_root) if vertebra_level else "",
        # Validation runs after the epoch; these steps are the training's.
        "val_interval": 2,
    }
    base, _, _ = _train("spine_xray_cls", {**overrides, "channels_last": False}, tmp_path / "nchw", device)
    losses, trainer, inputs = _train("spine_xray_cls", {**overrides, "channels_last": True}, tmp_path / "nhwc", device)
    _assert_nhwc_weights(trainer.network)
    # The batch is handed over as it comes: the network splits it into views (or bodies) before any convolution.
    assert len(inputs) == ITERATIONS and all(x.is_contiguous() for x in inputs)
    # The first loss comes from the same weights, another order of summation alone. Later ones drift further than the
    # segmentation networks': AdamW's first steps move each weight by about the learning rate whatever its gradient's
    # size, so rounding in near-zero gradients is amplified (the film classifier in channels first on one thread
    # against two drifted alike: 4e-6 relative at the third step, 5e-3 at the sixth).
    assert losses[0] == pytest.approx(base[0], rel=RTOL[device])
    assert losses == pytest.approx(base, rel=max(RTOL[device], 1e-2))
