"""``spine-monai package`` on every bundle: the zip's contents and its TorchScript model against the eager one."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
import torch
from conftest import REPO
from monai.bundle import ConfigParser, verify_metadata

from spine_monai.package import SCHEMA, package_bundle, packaged_configs
from spine_monai.workflow import read_bundle_config

BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def test_every_bundle_is_found():
    assert BUNDLES == ["spine_mri_seg", "spine_xray_ap_seg", "spine_xray_cls", "spine_xray_lat_seg"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_docs_install_the_spine_monai_the_bundle_requires(bundle):
    bundle_dir = REPO / "bundles" / bundle
    required = json.loads((bundle_dir / "configs" / "metadata.json").read_text())["required_packages_version"]
    pins = re.findall(r'pip install "spine-monai==([0-9.]+)"', (bundle_dir / "docs" / "README.md").read_text())
    assert pins == [required["spine-monai"]]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_package_of_each_bundle(bundle, tmp_path):
    bundle_dir = REPO / "bundles" / bundle
    parser = read_bundle_config(str(bundle_dir / "configs" / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    # A training checkpoint's layout: MONAI's CheckpointSaver keeps the weights under "model".
    torch.save({"model": net.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")

    zip_path = package_bundle(bundle_dir, tmp_path / "dist", ckpt=tmp_path / "ckpt.pt")
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "x")
    for name in ("train", "evaluate", "inference", "multi_gpu_train", "multi_gpu_evaluate", "metadata"):
        assert f"{bundle}/configs/{name}.json" in names, name
    for name in ("configs/logging.conf", "docs/README.md", "LICENSE", "DATA_LICENSE.txt", "models/model.pt"):
        assert f"{bundle}/{name}" in names, name
    packaged = tmp_path / "x" / bundle
    # Nothing was baked in: the configs travel byte for byte.
    for name in ("train.json", "evaluate.json", "inference.json"):
        assert (packaged / "configs" / name).read_bytes() == (bundle_dir / "configs" / name).read_bytes(), name
    verify_metadata(meta_file=str(packaged / "configs" / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((packaged / "configs" / "metadata.json").read_text())
    assert meta["packaged"]["config_files"] == [] and meta["packaged"]["overrides"] == {}
    assert meta["packaged"]["export_max_abs_diff"]["torchscript"] <= 1e-4

    spec = meta["network_data_format"]["inputs"]["image"]
    x = torch.rand(1, spec["num_channels"], *spec["spatial_shape"], generator=torch.Generator().manual_seed(2))
    scripted = torch.jit.load(str(packaged / "models" / "model.ts"))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-4)


def test_packaged_configs_put_each_override_where_it_belongs(tmp_path):
    bundle_dir = REPO / "bundles" / "spine_xray_ap_seg"
    overrides = {
        "num_workers": 0,
        "keep_freed_memory": False,
        "train::trainer::max_epochs": 7,
        "network_def#dropout": 0.1,
    }
    configs = packaged_configs(bundle_dir, [bundle_dir / "configs" / "attention_unet.json"], overrides)
    assert set(configs) == {"train.json", "evaluate.json", "inference.json"}
    train, evaluate, inference = configs["train.json"], configs["evaluate.json"], configs["inference.json"]
    for name, config in (("train.json", train), ("inference.json", inference)):
        assert config["network_def"]["_target_"] == "AttentionUnet", name
        assert config["network_def"]["dropout"] == 0.1 and config["num_workers"] == 0, name
    # Where a key is not defined it is not added: keep_freed_memory and the trainer are train.json's alone.
    assert train["keep_freed_memory"] is False and train["train"]["trainer"]["max_epochs"] == 7
    assert "keep_freed_memory" not in inference and "train" not in inference
    # evaluate.json is an overlay: merged on train.json, as monai.bundle run merges them, it evaluates that network.
    assert not {"network_def", "num_workers", "keep_freed_memory", "train"} & set(evaluate)
    merged = ConfigParser({})
    for config in (train, evaluate):
        for key, value in config.items():
            merged[key] = value
    assert merged["network_def"]["_target_"] == "AttentionUnet" and merged["network_def"]["dropout"] == 0.1
    assert merged["num_workers"] == 0 and merged["validate"]["records"] == evaluate["validate#records"]
    with pytest.raises(ValueError, match="override.s. dist_backend set nothing in train.json"):
        packaged_configs(bundle_dir, overrides={"dist_backend": "gloo"})  # multi_gpu_train.json's alone
    with pytest.raises(ValueError, match=r"nowhere\.json: config file not found"):
        packaged_configs(bundle_dir, [tmp_path / "nowhere.json"])
