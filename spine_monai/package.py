"""Package a bundle as a zip another group can run: validated metadata, TorchScript (and ONNX) checked against
the eager model, configs, docs, licences and weights.

    spine-monai package bundles/spine_xray_ap_seg --ckpt runs/ap/models/model.pt --out dist/
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from spine_monai.workflow import OVERLAYS, bundle_config_files, check_config_ids, read_bundle_config, run_config_files
from spine_monai.workflow.checkpoint import check_model_record, load_checkpoint

__all__ = ["SCHEMA", "EXPORT_ATOL", "package_bundle", "packaged_configs", "validate_metadata"]

SCHEMA = Path(__file__).parent / "resources" / "meta_schema_20240725.json"

# Largest absolute output difference an export may have from the eager model on the example input.
EXPORT_ATOL = {"torchscript": 1e-4, "onnx": 1e-3}
# How to package a checkpoint trained on another input grid than the configs' (see check_model_record).
PACKAGE_GRID_HINT = "package it with the variant files (--config) or overrides (--override) that give it {trained}"
# The configs a variant or overrides are baked into.
BAKED_CONFIGS = ("train.json", "evaluate.json", "inference.json")

DATA_LICENSE = """Data licence note
=================

This bundle's weights were trained on: {trained_on}

The bundle holds no images. If you fine-tune or evaluate it on a dataset, that dataset's licence governs the
data and, where it says so, models derived from it. The ELL888 spine X-ray dataset and the BIMCV MIDAS lumbar
MRI data are distributed under their own terms; check them before sharing weights trained on them.

Research use only; not a medical device.
"""


def validate_metadata(bundle_dir: str | os.PathLike, schema: str | os.PathLike = SCHEMA) -> dict:
    """Check ``configs/metadata.json`` against the MONAI bundle schema and that its version has a changelog entry.

    Raises:
        ValueError: naming what is wrong.
    """
    from monai.bundle import verify_metadata

    meta_file = Path(bundle_dir) / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise ValueError(f"{meta_file}: missing; a bundle needs configs/metadata.json")
    if not Path(schema).is_file():
        raise ValueError(f"{schema}: schema file not found")
    try:
        verify_metadata(meta_file=str(meta_file), filepath=str(schema))
    except Exception as e:  # verify_metadata raises the jsonschema error it met
        raise ValueError(f"{meta_file}: does not match the MONAI bundle schema: {e}") from e
    meta = json.loads(meta_file.read_text())
    if meta["version"] not in meta.get("changelog", {}):
        raise ValueError(f"{meta_file}: version {meta['version']} has no entry in 'changelog'")
    return meta


def packaged_configs(
    bundle_dir: str | os.PathLike,
    config_files: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, object] | None = None,
) -> dict[str, dict]:
    """The bundle's train, evaluate and inference configs as a training run used them.

    A model trained with a variant (``--config_file "['train.json','attention_unet.json']"``) or with overrides
    (``--structures "['Ap_Vertebra']"``) only loads into a network built the same way, so the package bakes them
    into its configs and the receiver runs the plain ``inference.json``.

    Args:
        bundle_dir: the bundle folder.
        config_files: files merged on top of each config, in order: a variant in ``configs/`` or your own.
        overrides: ids (``#`` or ``::`` separators) and values, as ``monai.bundle run --<id> <value>`` takes them;
            each is set in every config that holds it (a top-level key) or its parent (a nested id).

    Returns:
        config file name -> merged config.

    Raises:
        ValueError: for a config file that does not exist, or an override that none of these configs holds (a key
            only ``multi_gpu_train.json`` defines).
        UnknownOverrideError: for override ids that no config file of the bundle (or ``config_files``) defines.
    """
    bundle_dir = Path(bundle_dir)
    configs_dir = bundle_dir / "configs"
    config_files = [Path(f) for f in config_files]
    for f in config_files:
        if not f.is_file():
            raise ValueError(f"{f}: config file not found")
    overrides = {k.replace("::", "#"): v for k, v in (overrides or {}).items()}
    # A variant is merged into the configs that stand alone; an overlay (evaluate.json) takes it from train.json.
    parsers = {
        name: ConfigParser(ConfigParser.load_config_files([configs_dir / name, *config_files]))
        for name in BAKED_CONFIGS
        if name not in OVERLAYS
    }
    overlays = {name: ConfigParser.load_config_file(configs_dir / name) for name in BAKED_CONFIGS if name in OVERLAYS}
    runs = [ConfigParser.load_config_files([*run_config_files(configs_dir, name), *config_files]) for name in overlays]
    files = bundle_config_files(configs_dir, config_files)
    check_config_ids(overrides, files, [*(p.get() for p in parsers.values()), *runs], overrides)
    unplaced = []
    for key, value in overrides.items():
        # A top-level key goes where it is defined, a nested id where its parent is (a new argument of a component too).
        holder = key.rsplit("#", 1)[0] if "#" in key else key
        placed = False
        for parser in parsers.values():
            if holder in parser:
                parser[key] = value
                placed = True
        for overlay in overlays.values():
            # An overlay keeps its flat ids (validate#records), which MONAI's runner merges into train.json's sections.
            if _defines(overlay, holder):
                overlay[key] = value
                placed = True
        if not placed:
            unplaced.append(key)
    if unplaced:
        raise ValueError(f"override(s) {', '.join(unplaced)} set nothing in {', '.join(BAKED_CONFIGS)}")
    return {name: parsers[name].get() if name in parsers else overlays[name] for name in BAKED_CONFIGS}


def _defines(overlay: dict, id_: str) -> bool:
    """Whether an overlay, whose keys are ids (``validate#records``), defines ``id_`` or something under it."""
    for key, value in overlay.items():
        if id_ == key or key.startswith(id_ + "#"):
            return True
        if id_.startswith(key + "#"):
            node = value
            for part in id_[len(key) + 1 :].split("#"):
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    break
            else:
                return True
    return False


def _example_input(meta: dict) -> torch.Tensor:
    spec = meta["network_data_format"]["inputs"]["image"]
    shape = [int(s) for s in spec["spatial_shape"]]
    return torch.rand(2, int(spec["num_channels"]), *shape, generator=torch.Generator().manual_seed(0))


def _set_input_grid(meta: dict, grid: Sequence[int]) -> None:
    """Make ``meta``'s input, and the outputs of the input's shape, ``grid``: the packaged configs' resize grid."""
    fmt = meta["network_data_format"]
    unbaked = fmt["inputs"]["image"]["spatial_shape"]
    for spec in [fmt["inputs"]["image"], *fmt["outputs"].values()]:
        if spec.get("spatial_shape") == unbaked:
            spec["spatial_shape"] = [int(s) for s in grid]


def _weights(state: object, ckpt: Path) -> tuple[dict, str]:
    """The network's state dict in ``state``, read from ``ckpt``, and its key there (``"model"`` in a training
    checkpoint, else ``""``).

    Raises:
        ValueError: when it holds no state dict.
    """
    weights, key = (state["model"], "model") if isinstance(state, dict) and "model" in state else (state, "")
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{ckpt}: holds no network state dict (names to tensors), found {type(weights).__name__}")
    return weights, key


def _eager_network(parser: ConfigParser, ckpt: Path, weights: dict) -> torch.nn.Module:
    """``network_def`` of the config in ``parser`` with ``weights`` loaded, in eval mode.

    Raises:
        ValueError: when the weights do not fit the network, naming both and the likely cause.
    """
    net = parser.get_parsed_content("network_def")
    expected = net.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshaped = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or misshaped:
        example = (missing or unexpected or misshaped)[0]
        raise ValueError(
            f"{ckpt}: the weights do not fit the bundle's network_def ({type(net).__name__}): {len(missing)} "
            f"missing, {len(unexpected)} unexpected and {len(misshaped)} differently shaped tensors (first: "
            f"{example}). Package with the variant config files (--config) and overrides (--override) the model "
            "was trained with."
        )
    net.load_state_dict(weights)
    return net.eval()


def _check_io(net: torch.nn.Module, x: torch.Tensor, meta: dict, meta_file: Path) -> torch.Tensor:
    """The network's output for ``x``, checked against the outputs ``network_data_format`` describes.

    Raises:
        ValueError: when the network does not take ``x`` or gives another number of output channels.
    """
    try:
        with torch.no_grad():
            y = net(x)
    except (RuntimeError, ValueError) as e:
        raise ValueError(
            f"{meta_file}: the network does not take the input network_data_format describes "
            f"(shape {list(x.shape)}): {e}; describe this model's input in the metadata"
        ) from e
    want = int(meta["network_data_format"]["outputs"]["pred"]["num_channels"])
    if y.shape[1] != want:
        raise ValueError(
            f"{meta_file}: network_data_format says {want} output channels, the network gives {y.shape[1]}; "
            "describe this model's outputs (num_channels, channel_def) in the metadata"
        )
    return y


def _export_torchscript(
    config_file: Path, bundle_dir: Path, ckpt: Path, key: str, out: Path, x: torch.Tensor, eager: torch.Tensor
) -> float:
    """Export ``network_def`` of ``config_file`` with MONAI's ``ckpt_export`` and compare it with ``eager``.

    Returns:
        the largest absolute difference between the TorchScript and eager outputs for ``x``.

    Raises:
        ValueError: when it exceeds ``EXPORT_ATOL["torchscript"]``.
    """
    from monai.bundle import ckpt_export

    ckpt_export(
        net_id="network_def",
        filepath=str(out),
        ckpt_file=str(ckpt),
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        config_file=str(config_file),
        key_in_ckpt=key,
        bundle_root=str(bundle_dir),
    )
    with torch.no_grad():
        diff = float((torch.jit.load(str(out))(x) - eager).abs().max())
    if diff > EXPORT_ATOL["torchscript"]:
        raise ValueError(f"TorchScript output differs from eager by {diff:.3g} (> {EXPORT_ATOL['torchscript']})")
    return diff


def _export_onnx(net: torch.nn.Module, out: Path, x: torch.Tensor, eager: torch.Tensor) -> float:
    """Export ``net`` to ONNX with a free batch axis and compare onnxruntime's output with ``eager``.

    Returns:
        the largest absolute difference for ``x``.

    Raises:
        ValueError: without onnx and onnxruntime, or when the difference exceeds ``EXPORT_ATOL["onnx"]``.
    """
    try:
        import onnxruntime
    except ImportError as e:
        raise ValueError("--onnx needs the onnx and onnxruntime packages: pip install onnx onnxruntime") from e
    torch.onnx.export(
        net,
        (x,),
        str(out),
        input_names=["image"],
        output_names=["pred"],
        dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}},
        dynamo=False,
    )
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    diff = float(np.abs(session.run(None, {"image": x.numpy()})[0] - eager.numpy()).max())
    if diff > EXPORT_ATOL["onnx"]:
        raise ValueError(f"ONNX output differs from eager by {diff:.3g} (> {EXPORT_ATOL['onnx']})")
    return diff


def package_bundle(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    schema: str | os.PathLike = SCHEMA,
    onnx: bool = False,
    trained_on: str = "synthetic spine data from spine_monai's generator",
    config_files: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, object] | None = None,
) -> Path:
    """Validate, export and zip a bundle.

    The zip's ``configs/metadata.json`` gains a ``packaged`` record: date, spine-monai version, the checkpoint's
    SHA-256, the config files and overrides baked in, and each export's largest difference from the eager model.
    Its ``network_data_format`` takes the input grid (``input_grid``) of the packaged configs, which the exports
    are checked on.

    Args:
        bundle_dir: the bundle folder (``configs/``, ``docs/``, ``LICENSE``, ``models/``).
        out: the zip to write, or a folder to write ``<name>_v<version>.zip`` into.
        ckpt: trained weights; defaults to ``<bundle>/models/model.pt``.
        schema: the MONAI metadata schema file.
        onnx: also export ONNX and check it with onnxruntime.
        trained_on: what the weights were trained on, for the data-licence note.
        config_files: variant files the model was trained with, baked into the packaged configs
            (see :py:func:`packaged_configs`).
        overrides: config overrides the model was trained with, baked in the same way.

    Returns:
        the zip's path.

    Raises:
        ValueError: for invalid metadata, a missing changelog entry or licence, missing weights, weights that do not
            fit the network, weights trained on another input grid or by another bundle, structure set or channel
            set than the packaged configs' (see :py:func:`spine_monai.workflow.check_model_record`), a network whose
            input or outputs differ from the metadata, or exports that do not match the eager model.
        UnknownOverrideError: for an override no config of the bundle defines.
    """
    from spine_monai import __version__

    bundle_dir = Path(bundle_dir).resolve()
    meta = validate_metadata(bundle_dir, schema)
    name = bundle_dir.name
    for required in ("configs/inference.json", "configs/train.json", "docs/README.md", "LICENSE"):
        if not (bundle_dir / required).is_file():
            raise ValueError(f"{bundle_dir / required}: missing; a packaged bundle needs it")
    ckpt = Path(ckpt) if ckpt else bundle_dir / "models" / "model.pt"
    if not ckpt.is_file():
        raise ValueError(f"{ckpt}: no trained weights to package; train first or pass --ckpt")
    configs = packaged_configs(bundle_dir, config_files, overrides)
    configs_meta = bundle_dir / "configs" / "metadata.json"
    baked = bool(config_files or overrides)
    out = Path(out)
    zip_path = out / f"{name}_v{meta['version']}.zip" if out.is_dir() or not out.suffix else out
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        staged = tmp / "configs"
        staged.mkdir()
        for config_name, config in configs.items():
            (staged / config_name).write_text(json.dumps(config, indent=4) + "\n")
        state = load_checkpoint(ckpt)
        weights, key = _weights(state, ckpt)
        inference = read_bundle_config(
            staged / "inference.json", {"bundle_root": str(bundle_dir)}, meta_file=configs_meta
        )
        grid = inference.get_parsed_content("input_grid") if "input_grid" in inference else None
        identity = inference.get_parsed_content("model_identity") if "model_identity" in inference else None
        check_model_record(state, ckpt, grid, PACKAGE_GRID_HINT, identity)
        if grid is not None:
            _set_input_grid(meta, grid)
        net = _eager_network(inference, ckpt, weights)
        x = _example_input(meta)
        eager = _check_io(net, x, meta, bundle_dir / "configs" / "metadata.json")
        models = tmp / "models"
        models.mkdir()
        ts = _export_torchscript(staged / "inference.json", bundle_dir, ckpt, key, models / "model.ts", x, eager)
        diffs = {"torchscript": ts}
        if onnx:
            diffs["onnx"] = _export_onnx(net, models / "model.onnx", x, eager)
        meta["packaged"] = {
            "date": date.today().isoformat(),
            "spine_monai_version": __version__,
            "checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
            "config_files": [Path(f).name for f in config_files],
            "overrides": dict(overrides or {}),
            "export_max_abs_diff": diffs,
        }
        # Only now that every check has passed is anything written beside the zip.
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        partial = zip_path.with_name(f".{zip_path.name}.{os.getpid()}.tmp")
        try:
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for folder in ("configs", "docs"):
                    for f in sorted((bundle_dir / folder).rglob("*")):
                        if f.is_file() and "__pycache__" not in f.parts:
                            arcname = f"{name}/{f.relative_to(bundle_dir).as_posix()}"
                            if f.parent.name == "configs" and f.name == "metadata.json":
                                zf.writestr(arcname, json.dumps(meta, indent=4, default=str) + "\n")
                            elif f.parent.name == "configs" and f.name in configs and baked:
                                zf.write(staged / f.name, arcname)
                            else:
                                zf.write(f, arcname)
                zf.write(bundle_dir / "LICENSE", f"{name}/LICENSE")
                zf.write(ckpt, f"{name}/models/model.pt")
                for f in sorted(models.iterdir()):
                    zf.write(f, f"{name}/models/{f.name}")
                zf.writestr(f"{name}/DATA_LICENSE.txt", DATA_LICENSE.format(trained_on=trained_on))
            os.replace(partial, zip_path)
        finally:
            partial.unlink(missing_ok=True)
    return zip_path
