"""Dataset recipe: the FastCleverSeg lumbar MRI volumes (MATLAB ``.mat``) to the MRI bundle's case layout.

    python -m pipelines.recipe_fastcleverseg --src DIR/ImageDatasets --out DIR [--sets VB1 VB2 IVD] [--channel T1w]

The public repository ``JonathanRamos/fastcleverseg`` holds, under ``ImageDatasets/``, sagittal lumbar MRI
volumes with manual labels as ``<set>/Isotropic/Matlab/<nn>.mat``: ``I`` the volume and ``GT`` the labels, one id
per structure (each vertebral body in VB1 and VB2, each of five lumbar discs in IVD). This recipe writes one case
folder per volume::

    <out>/vertebrae/VB1-02/T1w.nii.gz, label.nii.gz     label map {"background": 0, "vertebrae": 1}
    <out>/discs/IVD-11/T1w.nii.gz, label.nii.gz         label map {"background": 0, "intervertebral_discs": 1}

with ``label_map.json`` beside each tree (pass it to ``spine-monai datalist mri --label-map`` and to the bundle's
``--label_map``). The per-structure ids become one class: the sources number bodies and discs in their own order,
not by anatomical level, and the bundle names levels by their order along the spine.

Geometry: the ``Isotropic`` volumes are resampled to 1 mm voxels (VB2's 305x305x39 volumes at 1.25x1.25x2 mm
became 381x381x76-77), stored as (rows towards inferior, columns towards posterior, sagittal slices). The affine
says so: axis codes ``IPR`` with 1 mm spacing, so the bundle's ``Orientationd(axcodes="PIR")`` gives the sagittal
slices it trains on. The sources do not record the left-right direction of the slices, which a sagittal slice
network does not use; it is written as towards the right.

The channel is one MR sequence, named ``--channel`` (default ``T1w``, the bundle's first channel); VB2 is T2-weighted
and VB1 mixes sequences, so name it as your own data will be named. ``ImageDatasets/VBs/VB3`` is reserved for the
project's independent check: the recipe refuses it. A volume whose image and label differ in shape, hold NaN, or
have no labelled voxel is listed with its file and reason, and left out; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from spine_monai.errors import DataError, Problem

SETS: dict[str, tuple[str, str]] = {
    # set -> (folder under ImageDatasets, output tree)
    "VB1": ("VBs/VB1/Isotropic/Matlab", "vertebrae"),
    "VB2": ("VBs/VB2/Isotropic/Matlab", "vertebrae"),
    "IVD": ("IVD/Isotropic/Matlab", "discs"),
}
RESERVED = {"VB3"}
LABEL_MAPS: dict[str, dict[str, int]] = {
    "vertebrae": {"background": 0, "vertebrae": 1},
    "discs": {"background": 0, "intervertebral_discs": 1},
}
# Voxel index -> RAS+ mm for arrays stored (inferior, posterior, right) at 1 mm.
AFFINE = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def read_case(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``.mat`` file's volume and labels.

    Returns:
        ``(image, labels)``: float32 and uint8 arrays of the same shape; labels 1 where any structure is.

    Raises:
        DataError: naming the file when it is unreadable, lacks ``I`` or ``GT``, their shapes differ, the volume
            has NaN or inf, or nothing is labelled.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path)
    except (MatReadError, OSError, ValueError, NotImplementedError) as e:
        raise DataError(path, f"not a readable MATLAB file ({e})") from e
    missing = [k for k in ("I", "GT") if k not in mat]
    if missing:
        raise DataError(path, f"no {' or '.join(missing)} variable: expected I (volume) and GT (labels)")
    image, labels = np.asarray(mat["I"]), np.asarray(mat["GT"])
    if image.ndim != 3 or image.shape != labels.shape:
        raise DataError(path, f"volume I is {image.shape} but labels GT are {labels.shape}: they must match")
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise DataError(path, "volume I holds NaN or inf voxels")
    if not (labels > 0).any():
        raise DataError(path, "labels GT are all background")
    return image, (labels > 0).astype(np.uint8)


def write_case(folder: Path, channel: str, image: np.ndarray, labels: np.ndarray) -> None:
    """Write ``<folder>/<channel>.nii.gz`` and ``<folder>/label.nii.gz`` with the recipe's affine."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, AFFINE), folder / f"{channel}.nii.gz")
    nib.save(nib.Nifti1Image(labels, AFFINE), folder / "label.nii.gz")


def convert(src: Path, out: Path, sets: list[str], channel: str) -> tuple[dict, list[Problem]]:
    """Convert the chosen sets; return what was written per output tree and every problem."""
    refused = sorted(set(sets) & RESERVED)
    if refused:
        raise ValueError(f"{', '.join(refused)} is reserved for the project's independent check; do not convert it")
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise ValueError(f"unknown sets {unknown}; choose from {', '.join(SETS)}")
    written: dict[str, list[dict]] = {}
    problems: list[Problem] = []
    for name in sets:
        folder, tree = SETS[name]
        files = sorted((src / folder).glob("*.mat"))
        if not files:
            problems.append(Problem(str(src / folder), f"no .mat volumes of {name}"))
            continue
        for path in files:
            try:
                image, labels = read_case(path)
            except DataError as e:
                problems.extend(e.problems)
                continue
            case = f"{name}-{path.stem}"
            write_case(out / tree / case, channel, image, labels)
            written.setdefault(tree, []).append({"case": case, "source": str(path), "shape": list(image.shape)})
    for tree, cases in written.items():
        (out / tree / "label_map.json").write_text(json.dumps(LABEL_MAPS[tree]) + "\n")
        (out / tree / "recipe.json").write_text(
            json.dumps({"recipe": "pipelines.recipe_fastcleverseg", "channel": channel, "cases": cases}, indent=1)
        )
    return written, problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, type=Path, help="the repository's ImageDatasets folder")
    parser.add_argument("--out", required=True, type=Path, help="destination folder")
    parser.add_argument("--sets", nargs="+", default=list(SETS), help=f"sets to convert (default {' '.join(SETS)})")
    parser.add_argument("--channel", default="T1w", help="the channel's file name (default T1w)")
    args = parser.parse_args(argv)
    try:
        written, problems = convert(args.src, args.out, args.sets, args.channel)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for tree, cases in written.items():
        print(f"wrote {len(cases)} cases to {args.out / tree} (label map in {args.out / tree / 'label_map.json'})")
    if problems:
        print(f"left out ({len(problems)}):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
    if not written:
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
