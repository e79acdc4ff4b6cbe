"""The same-budget alternative a user would pick instead of the bundle: a plain PyTorch loop and an smp U-Net.

    python -m pipelines.baseline_smp --dataset-dir DIR --datalist FILE --test-dir DIR --test-datalist FILE \
        --out DIR --seconds 1800 [--spatial-size 384 256] [--fold 0]

Trains ``segmentation_models_pytorch.Unet("resnet34", encoder_weights=None)`` (no pretrained weights: they cannot
be downloaded here) on the vertebra masks of an ELL888-layout set for a fixed wall time, on the bundle's input grid
with the same aspect-preserving resize and padding, then writes a 1-bit ``Ap_Vertebra.png`` per test film at the
film's size, in the layout the bundle's evaluation writes, so that ``pipelines.bench_real`` scores both with the
same code. The loop is what such a user writes: Adam, Dice plus BCE, random flips, small rotations and scaling, a
cosine schedule over the time budget, and the weights of the best validation epoch.

It runs in its own environment (``make bench-real`` makes ``.venv-smp``): segmentation_models_pytorch needs
torchvision, which has no CPU build beside the project's torch, so that environment has torch 2.14.1 with
torchvision 0.29.1 (CUDA builds, run on the CPU) and spine-monai for its readers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spine_monai.data import read_mask, read_radiograph, write_mask, xray_view_records
from spine_monai.transforms.spatial import fit_size

STRUCTURE = "Ap_Vertebra"


def _prepare(path: str, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """A film scaled to [0, 1] by its 0.5 and 99.5 percentiles, resized to fit ``grid`` and padded (centred)."""
    grey = read_radiograph(path)
    lo, hi = np.percentile(grey, (0.5, 99.5))
    x = torch.from_numpy(np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32))[None, None]
    size = fit_size(grey.shape, grid)
    x = F.interpolate(x, size=size, mode="area")
    return _pad(x, grid), size


def _pad(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    dh, dw = grid[0] - x.shape[-2], grid[1] - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def _unpad(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    dh, dw = x.shape[-2] - size[0], x.shape[-1] - size[1]
    return x[..., dh // 2 : dh // 2 + size[0], dw // 2 : dw // 2 + size[1]]


def _load(records: list[dict], grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = [], []
    for r in records:
        x, size = _prepare(r["image"], grid)
        m = torch.from_numpy(read_mask(r["label"][0]).astype(np.float32))[None, None]
        images.append(x)
        masks.append(_pad((F.interpolate(m, size=size, mode="area") > 0.5).float(), grid))
    return torch.cat(images), torch.cat(masks)


def _augment(x: torch.Tensor, y: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    angle = (torch.rand(n, generator=rng) - 0.5) * math.radians(20)
    scale = 1 + (torch.rand(n, generator=rng) - 0.5) * 0.2
    flip = torch.where(torch.rand(n, generator=rng) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, torch.zeros(n)], 1), torch.stack([sin * flip, cos, torch.zeros(n)], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False), (F.grid_sample(y, grid, align_corners=False) > 0.5).float()


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * y).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, y)


def _dice(logits: torch.Tensor, y: torch.Tensor) -> float:
    p = (logits > 0).float()
    inter = (p * y).sum((1, 2, 3))
    return float((2 * inter / (p.sum((1, 2, 3)) + y.sum((1, 2, 3))).clamp_min(1)).mean())


def train(model, train_xy, val_xy, seconds: float, batch_size: int, seed: int) -> dict:
    """Train for ``seconds`` of wall time; keep the weights of the best validation Dice (checked each epoch)."""
    rng = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = train_xy
    start = time.perf_counter()
    best, best_state, epochs = -1.0, None, 0
    while time.perf_counter() - start < seconds:
        model.train()
        order = torch.randperm(len(x), generator=rng)
        for k in range(0, len(x) - batch_size + 1, batch_size):
            progress = min((time.perf_counter() - start) / seconds, 1.0)
            for g in opt.param_groups:
                g["lr"] = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * progress))
            xb, yb = _augment(x[order[k : k + batch_size]], y[order[k : k + batch_size]], rng)
            opt.zero_grad()
            _loss(model(xb), yb).backward()
            opt.step()
            if time.perf_counter() - start >= seconds:
                break
        epochs += 1
        model.eval()
        with torch.no_grad():
            score = float(
                np.mean([_dice(model(val_xy[0][i : i + 8]), val_xy[1][i : i + 8]) for i in range(0, len(val_xy[0]), 8)])
            )
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {epochs}: validation Dice {score:.4f} at {time.perf_counter() - start:.0f} s", flush=True)
    model.load_state_dict(best_state)
    return {"epochs": epochs, "best_val_dice": best, "train_s": time.perf_counter() - start}


def predict(model, records: list[dict], grid: tuple[int, int], out: Path) -> None:
    """Write each film's ``Ap_Vertebra.png`` at its size under ``out/<its folder in the layout>``."""
    model.eval()
    with torch.no_grad():
        for r in records:
            x, size = _prepare(r["image"], grid)
            shape = read_radiograph(r["image"]).shape
            prob = torch.sigmoid(_unpad(model(x), size))
            mask = F.interpolate(prob, size=shape, mode="bilinear", align_corners=False)[0, 0] > 0.5
            write_mask(out / r["output_subdir"] / f"{STRUCTURE}.png", mask.numpy())


def main(argv=None) -> int:
    import segmentation_models_pytorch as smp

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True, type=Path)
    parser.add_argument("--datalist", required=True, type=Path)
    parser.add_argument("--test-dir", required=True, type=Path)
    parser.add_argument("--test-datalist", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seconds", required=True, type=float, help="training wall time")
    parser.add_argument("--spatial-size", nargs=2, type=int, default=[384, 256])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    grid = tuple(args.spatial_size)
    start = time.perf_counter()
    records = {
        split: xray_view_records(args.datalist, args.dataset_dir, "AP", [STRUCTURE], split, args.fold)
        for split in ("train", "validation")
    }
    train_xy, val_xy = _load(records["train"], grid), _load(records["validation"], grid)
    load_s = time.perf_counter() - start
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=1)
    # The clock covers loading too, as the bundle's training time covers its cache.
    summary = train(model, train_xy, val_xy, args.seconds - load_s, args.batch_size, args.seed)
    test = xray_view_records(args.test_datalist, args.test_dir, "AP", [STRUCTURE], "test")
    predict(model, test, grid, args.out / "predictions")
    summary.update(load_s=load_s, spatial_size=list(grid), torch=torch.__version__, smp=smp.__version__)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
