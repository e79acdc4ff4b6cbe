"""Package a bundle as a zip another group can run: validated metadata, TorchScript (and ONNX) checked against
the eager model, configs, docs, licences and weights.

    spine-monai package bundles/spine_xray_ap_seg --ckpt runs/ap/models/model.pt --out dist/
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["SCHEMA", "package_bundle", "validate_metadata", "export_torchscript"]

SCHEMA = Path(__file__).parent / "resources" / "meta_schema_20240725.json"

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


def _example_input(meta: dict) -> torch.Tensor:
    spec = meta["network_data_format"]["inputs"]["image"]
    shape = [int(s) for s in spec["spatial_shape"]]
    return torch.rand(2, int(spec["num_channels"]), *shape, generator=torch.Generator().manual_seed(0))


def _weights(ckpt: Path) -> tuple[dict, str]:
    """The network's state dict in ``ckpt`` and its key there (``"model"`` in a training checkpoint, else ``""``)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return (state["model"], "model") if isinstance(state, dict) and "model" in state else (state, "")


def _eager_network(bundle_dir: Path, weights: dict) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle_dir)})
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(weights)
    return net.eval()


def export_torchscript(bundle_dir: Path, ckpt: Path, out: Path, meta: dict, atol: float = 1e-4) -> float:
    """Export the bundle's ``network_def`` with MONAI's ``ckpt_export`` and check it against the eager model.

    Returns:
        the largest absolute difference between TorchScript and eager outputs on a fixed random input.

    Raises:
        ValueError: when the outputs differ by more than ``atol``.
    """
    from monai.bundle import ckpt_export

    weights, key = _weights(ckpt)
    ckpt_export(
        net_id="network_def",
        filepath=str(out),
        ckpt_file=str(ckpt),
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        config_file=str(bundle_dir / "configs" / "inference.json"),
        key_in_ckpt=key,
        bundle_root=str(bundle_dir),
    )
    x = _example_input(meta)
    with torch.no_grad():
        eager = _eager_network(bundle_dir, weights)(x)
        scripted = torch.jit.load(str(out))(x)
    diff = float((eager - scripted).abs().max())
    if diff > atol:
        raise ValueError(f"TorchScript output differs from eager by {diff:.3g} (> {atol})")
    return diff


def _export_onnx(bundle_dir: Path, ckpt: Path, out: Path, meta: dict, atol: float = 1e-3) -> float:
    try:
        import onnxruntime
    except ImportError as e:
        raise ValueError("--onnx needs the onnx and onnxruntime packages: pip install onnx onnxruntime") from e
    net = _eager_network(bundle_dir, _weights(ckpt)[0])
    x = _example_input(meta)
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
    with torch.no_grad():
        eager = net(x).numpy()
    diff = float(np.abs(session.run(None, {"image": x.numpy()})[0] - eager).max())
    if diff > atol:
        raise ValueError(f"ONNX output differs from eager by {diff:.3g} (> {atol})")
    return diff


def package_bundle(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    schema: str | os.PathLike = SCHEMA,
    onnx: bool = False,
    trained_on: str = "synthetic spine data from spine_monai's generator",
) -> Path:
    """Validate, export and zip a bundle.

    Args:
        bundle_dir: the bundle folder (``configs/``, ``docs/``, ``LICENSE``, ``models/``).
        out: the zip to write, or a folder to write ``<name>_v<version>.zip`` into.
        ckpt: trained weights; defaults to ``<bundle>/models/model.pt``.
        schema: the MONAI metadata schema file.
        onnx: also export ONNX and check it with onnxruntime.
        trained_on: what the weights were trained on, for the data-licence note.

    Returns:
        the zip's path.

    Raises:
        ValueError: for invalid metadata, a missing changelog entry or licence, missing weights, or exports that
            do not match the eager model.
    """
    bundle_dir = Path(bundle_dir).resolve()
    meta = validate_metadata(bundle_dir, schema)
    name = bundle_dir.name
    for required in ("configs/inference.json", "configs/train.json", "docs/README.md", "LICENSE"):
        if not (bundle_dir / required).is_file():
            raise ValueError(f"{bundle_dir / required}: missing; a packaged bundle needs it")
    ckpt = Path(ckpt) if ckpt else bundle_dir / "models" / "model.pt"
    if not ckpt.is_file():
        raise ValueError(f"{ckpt}: no trained weights to package; train first or pass --ckpt")
    out = Path(out)
    zip_path = out / f"{name}_v{meta['version']}.zip" if out.is_dir() or not out.suffix else out
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_torchscript(bundle_dir, ckpt, tmp / "model.ts", meta)
        if onnx:
            _export_onnx(bundle_dir, ckpt, tmp / "model.onnx", meta)
        partial = zip_path.with_name(f".{zip_path.name}.{os.getpid()}.tmp")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for folder in ("configs", "docs"):
                for f in sorted((bundle_dir / folder).rglob("*")):
                    if f.is_file() and "__pycache__" not in f.parts:
                        zf.write(f, f"{name}/{f.relative_to(bundle_dir).as_posix()}")
            zf.write(bundle_dir / "LICENSE", f"{name}/LICENSE")
            zf.write(ckpt, f"{name}/models/model.pt")
            for f in sorted(tmp.iterdir()):
                zf.write(f, f"{name}/models/{f.name}")
            zf.writestr(f"{name}/DATA_LICENSE.txt", DATA_LICENSE.format(trained_on=trained_on))
        os.replace(partial, zip_path)
    return zip_path
