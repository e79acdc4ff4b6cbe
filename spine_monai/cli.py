"""``spine-monai``: thin subcommands over the package's functions.

Exit codes: 0 success; 1 the command ran but found bad input (listed on stderr); 2 usage error or nothing
usable at all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from spine_monai.errors import DataError

__all__ = ["build_parser", "main"]

VIEW_CHOICES = ("AP", "LAT")


def _print_problems(title: str, problems: Sequence[dict]) -> None:
    if problems:
        print(f"{title} ({len(problems)}):", file=sys.stderr)
        for p in problems:
            print(f"  - {p['path']}: {p['reason']}", file=sys.stderr)


def _cmd_synth_xray(args: argparse.Namespace) -> int:
    from spine_monai.synthetic.xray import parse_size, write_xray_dataset

    size = parse_size(args.size)
    doc = write_xray_dataset(
        args.out, args.cases, seed=args.seed, size=size, damaged_fraction=args.damaged_fraction, workers=args.workers
    )
    n_damaged = sum(c["class"] == "Damaged" for c in doc["cases"].values())
    print(f"wrote {len(doc['cases'])} patients ({n_damaged} Damaged) at {size[0]}x{size[1]} to {args.out}")
    return 0


def _cmd_synth_mri(args: argparse.Namespace) -> int:
    from spine_monai.synthetic.mri import write_mri_dataset

    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    if len(shape) != 3:
        raise ValueError(f"--shape must be SLICESxROWSxCOLS, e.g. 12x224x224; got {args.shape!r}")
    write_mri_dataset(
        args.out,
        args.cases,
        seed=args.seed,
        shape=shape,
        dicom_cases=args.dicom_cases,
        slice_format="png" if args.png_slices else None,
        workers=args.workers,
    )
    kind = "2D PNG slice cases" if args.png_slices else "cases"
    print(f"wrote {args.cases} synthetic lumbar MRI {kind} ({args.dicom_cases} as DICOM series) to {args.out}")
    return 0


def _cmd_datalist_mri(args: argparse.Namespace) -> int:
    from spine_monai.data.mri import build_mri_datalist

    channels = tuple(c.strip() for c in args.channels.split(",") if c.strip())
    datalist = build_mri_datalist(
        args.root,
        channels=channels,
        label_map=_label_map(args.label_map),
        folds=args.folds,
        test_fraction=args.test_fraction,
        seed=args.seed,
        verify=not args.no_verify,
    )
    return _finish_datalist(args, datalist)


def _label_map(text: str | None) -> dict[str, int]:
    """``--label-map``: JSON text or a JSON file mapping class names to ids, as the MRI bundle's ``label_map``."""
    import json

    from spine_monai.data.mri import MIDAS_LABELS

    if text is None:
        return dict(MIDAS_LABELS)
    source = Path(text)
    try:
        value = json.loads(source.read_text() if source.is_file() else text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--label-map {text!r} is neither a JSON object nor a JSON file ({e})") from e
    if not isinstance(value, dict) or not value or not all(isinstance(v, int) for v in value.values()):
        raise ValueError(f"--label-map must map class names to integer ids, got {value!r}")
    return value


def _parse_override(text: str) -> tuple[str, object]:
    # Imported on use: the override reader brings in MONAI's config parser, which a command without --override skips.
    from spine_monai.workflow.config import parse_override

    return parse_override(text)


def _cmd_package(args: argparse.Namespace) -> int:
    from spine_monai.package import SCHEMA, package_bundle
    from spine_monai.workflow import UnknownOverrideError

    try:
        path = package_bundle(
            args.bundle_dir,
            args.out,
            ckpt=args.ckpt,
            schema=args.schema or SCHEMA,
            onnx=args.onnx,
            trained_on=args.trained_on,
            config_files=args.config,
            overrides=dict(args.override),
        )
    except UnknownOverrideError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _split_structures(text: str | None, views: Sequence[str]) -> tuple[str, ...]:
    from spine_monai.data.layout import STRUCTURES

    if text is None:
        return tuple(s for v in views for s in STRUCTURES[v])
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _cmd_datalist_xray(args: argparse.Namespace) -> int:
    from spine_monai.data.xray import build_xray_datalist

    views = tuple(v.strip().upper() for v in args.views.split(",") if v.strip())
    structures = _split_structures(args.structures, views)
    datalist = build_xray_datalist(
        args.root,
        folds=args.folds,
        test_fraction=args.test_fraction,
        seed=args.seed,
        views=views,
        structures=structures,
        verify_pixels=not args.no_verify,
    )
    return _finish_datalist(args, datalist)


def _finish_datalist(args: argparse.Namespace, datalist: dict) -> int:
    from spine_monai.data.datalist import write_datalist

    _print_problems("warnings", datalist["warnings"])
    _print_problems("problems: these were left out", datalist["problems"])
    n_good = len(datalist["training"]) + len(datalist["testing"])
    if n_good == 0:
        print(f"error: no usable records under {args.root}; nothing written", file=sys.stderr)
        return 2
    write_datalist(args.out, datalist)
    print(
        f"wrote {args.out}: {len(datalist['training'])} training records in {datalist['num_folds']} folds, "
        f"{len(datalist['testing'])} testing, {len(datalist['problems'])} problems"
    )
    if datalist["problems"] and not args.allow_incomplete:
        print("exit status 1 because of the problems above; pass --allow-incomplete to accept them", file=sys.stderr)
        return 1
    return 0


def _cmd_import_landmarks(args: argparse.Namespace) -> int:
    from spine_monai.data.landmarks import import_landmarks, read_aasce, read_coco_keypoints

    if args.format == "aasce":
        if args.view not in (None, "AP"):
            raise ValueError("--format aasce holds AP films; --view must be AP or left out")
        films, problems = read_aasce(args.src, split=args.split)
    else:
        films, problems = read_coco_keypoints(args.src, view=args.view or "LAT", images_dir=args.images)
    doc = import_landmarks(
        films, args.out, class_name=args.class_name, source=str(args.src), fmt=args.format, problems=problems
    )
    _print_problems("problems: these were left out", doc["problems"])
    if not doc["cases"]:
        print(f"error: no film of {args.src} could be imported", file=sys.stderr)
        return 2
    print(f"imported {len(doc['cases'])} films to {args.out} ({len(doc['problems'])} left out); see landmarks.json")
    if doc["problems"] and not args.allow_incomplete:
        print("exit status 1 because of the problems above; pass --allow-incomplete to accept them", file=sys.stderr)
        return 1
    return 0


def _add_datalist_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, type=Path, help="dataset root")
    p.add_argument("--out", required=True, type=Path, help="datalist JSON to write")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="fraction held out as 'testing' (default 0; 1 for a test-only datalist of a held-out set)",
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="exit 0 even when some records had problems (they are still listed)",
    )


def _cmd_measure(args: argparse.Namespace) -> int:
    from spine_monai.measure import measure_tree

    try:
        df = measure_tree(
            args.masks,
            args.view,
            out_csv=args.out,
            images_dir=args.images,
            overlay=not args.no_overlay,
            anchor=args.anchor,
            anchor_end=args.anchor_end,
        )
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problems = df.attrs["problems"]
    summaries = df[df["row_type"] == "summary"]
    print(
        f"wrote {args.out}: {len(summaries)} patient-views, {int((df['row_type'] == 'vertebra').sum())} vertebrae, "
        f"{len(problems)} problems"
    )
    if problems:
        print(
            f"problems ({len(problems)}), also in {args.out.with_name(args.out.stem + '_problems.csv')}:",
            file=sys.stderr,
        )
        for p in problems:
            print(f"  - {p['path']}: {p['reason']}", file=sys.stderr)
        return 1
    return 0


def _add_measure_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``measure`` subcommand; its handler is ``args.func(args) -> exit code``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        the ``measure`` parser.
    """
    from spine_monai.measure.command import VIEWS

    p = subparsers.add_parser(
        "measure",
        help="Cobb angle, lordosis, heights, Genant grades and listhesis from vertebra masks",
        description="Measure <masks>/<class>/ID (<n>)/<VIEW>/{Ap,Lat}_Vertebra.png into one CSV (a row per "
        "vertebra and a summary row per patient and view) and an overlay PNG per patient-view next to it. "
        "Exit status 1 when some masks had problems (listed, and written to <out stem>_problems.csv).",
    )
    p.add_argument("--masks", required=True, type=Path, help="root of the mask tree (ground truth or predicted)")
    p.add_argument("--view", type=str.upper, choices=VIEWS, default=None, help="AP or LAT (default: both)")
    p.add_argument("--out", required=True, type=Path, help="CSV to write")
    p.add_argument("--images", type=Path, default=None, help="radiograph tree to draw overlays on (default: masks)")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    p.add_argument("--anchor", default="S1", help="level of the lowest body (default S1; L5 if no sacrum)")
    p.add_argument(
        "--anchor-end", choices=("bottom", "top"), default="bottom", help="which end --anchor names (default bottom)"
    )
    p.set_defaults(func=_cmd_measure)
    return p


def _cmd_report(args: argparse.Namespace) -> int:
    from spine_monai.report import build_report

    if not args.eval_dir and args.measure is None:
        print("error: nothing to report: give --eval-dir DIR (repeatable) and/or --measure FILE.csv", file=sys.stderr)
        return 2
    try:
        path = build_report(
            args.eval_dir,
            args.out,
            measure_csv=args.measure,
            title=args.title,
            thumb_height=args.thumb_height,
            view_height=args.view_height,
        )
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {args.out}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from spine_monai.analyze import analyze

    try:
        result = analyze(
            args.bundles,
            args.input,
            args.out,
            patient=args.patient,
            progress=not args.no_progress,
            dataset_dir=args.dataset_dir,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"analysed {len(result.patients)} patient(s) into {args.out}"
        + (f"; report {result.report}" if result.report else "")
    )
    if result.problems:
        print(f"{len(result.problems)} problem(s), also in {Path(args.out) / 'failures.csv'}:", file=sys.stderr)
        for p in result.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    return 0


def _add_analyze_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``analyze`` subcommand; its handler returns 0, 1 (some films or steps failed) or 2 (bad input).

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        the ``analyze`` parser.
    """
    p = subparsers.add_parser(
        "analyze",
        help="patients' films -> AP, LAT and classification bundles -> measurements -> one report",
        description="Run the packaged bundles (zips as `spine-monai package` writes them, or bundle folders) on "
        "patients' films through MONAI's bundle runner, then measure and report: one folder per patient (masks, "
        "overlays, measurements, classification, GradCAM maps, DICOM SEG and SR of DICOM films), measurements.csv, "
        "report.html. A film or step that fails is listed at the end and in failures.csv (exit status 1); the others "
        "go on.",
    )
    p.add_argument("--bundles", required=True, type=Path, help="folder of bundle zips or unzipped bundles")
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="PATH",
        help="an ELL888-layout folder, a patient folder (AP/, LAT/), AP=FILE / LAT=FILE, DICOM files or folders "
        "(view from ViewPosition), or a datalist JSON",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--patient", default="patient", help="the patient name of AP=FILE / LAT=FILE inputs")
    p.add_argument(
        "--dataset-dir",
        type=Path,
        default=None,
        help="the root a datalist input's paths are relative to (default: its folder)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_analyze)
    return p


def _add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``report`` subcommand; its handler is ``args.func(args) -> exit code`` (0 ok, 2 bad input).

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        the ``report`` parser.
    """
    from spine_monai.report import DEFAULT_TITLE

    p = subparsers.add_parser(
        "report",
        help="one self-contained HTML page of evaluation results and measurements",
        description="Summarise evaluation folders (X-ray or MRI segmentation, classification; recognised by the "
        "files they hold) and a measurement CSV in one static HTML file with tables, plots and overlay "
        "thumbnails embedded; it opens in any browser, offline. Exit status 2 for unrecognised or malformed input.",
    )
    p.add_argument(
        "--eval-dir",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="an evaluation folder, <run>/eval (repeatable)",
    )
    p.add_argument("--measure", type=Path, default=None, metavar="FILE.csv", help="CSV from `spine-monai measure`")
    p.add_argument("--out", required=True, type=Path, help="HTML file to write")
    p.add_argument("--title", default=DEFAULT_TITLE, help=f"page title (default {DEFAULT_TITLE!r})")
    p.add_argument(
        "--thumb-height", type=int, default=256, help="embedded thumbnail height in px (default 256; 0: none)"
    )
    p.add_argument(
        "--view-height",
        type=int,
        default=1600,
        help="height in px of the enlarged view embedded behind each thumbnail (default 1600; 0: none)",
    )
    p.set_defaults(func=_cmd_report)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spine-monai", description="MONAI-based spine X-ray and MRI toolkit.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = sub.add_parser("synth", help="write synthetic datasets in the real on-disk layouts")
    synth_sub = synth.add_subparsers(dest="modality", required=True, metavar="MODALITY")
    sx = synth_sub.add_parser(
        "xray",
        help="synthetic AP + LAT spine radiographs in the ELL888 layout",
        description="Write <out>/{Normal,Damaged}/ID (<n>)/{AP,LAT}/ with RGB JPEGs, 1-bit "
        "PNG masks per structure and <out>/ground_truth.json.",
    )
    sx.add_argument("--out", required=True, type=Path, help="destination folder")
    sx.add_argument("--cases", type=int, default=40, help="number of patients (default 40)")
    sx.add_argument("--seed", type=int, default=0, help="seed; the same seed gives byte-identical files")
    sx.add_argument("--size", default="384x576", help="WxH of each image (default 384x576; real films ~1900x2900)")
    sx.add_argument("--damaged-fraction", type=float, default=0.5, help="fraction of Damaged patients (default 0.5)")
    sx.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    sx.set_defaults(func=_cmd_synth_xray)
    sm = synth_sub.add_parser(
        "mri",
        help="synthetic sagittal lumbar MRI (T1w, T2w, 12-class label) as NIfTI",
        description="Write <out>/case_<nnn>/{T1w,T2w,label}.nii.gz with a real sagittal "
        "affine; optionally some cases as DICOM series folders, or 2D 16-bit PNG slices.",
    )
    sm.add_argument("--out", required=True, type=Path, help="destination folder")
    sm.add_argument("--cases", type=int, default=20, help="number of cases (default 20)")
    sm.add_argument("--seed", type=int, default=0, help="seed; the same seed gives byte-identical files")
    sm.add_argument("--shape", default="12x224x224", help="sagittal slices x rows x columns (default 12x224x224)")
    sm.add_argument("--dicom-cases", type=int, default=0, help="write the first N cases' channels as DICOM series")
    sm.add_argument("--png-slices", action="store_true", help="write 2D 16-bit PNG slices instead of volumes")
    sm.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    sm.set_defaults(func=_cmd_synth_mri)

    datalist = sub.add_parser("datalist", help="scan a dataset tree and write a MONAI datalist JSON")
    dl_sub = datalist.add_subparsers(dest="modality", required=True, metavar="MODALITY")
    dx = dl_sub.add_parser(
        "xray",
        help="scan an ELL888-layout tree",
        description="Scan <root>/{Normal,Damaged}/ID (<n>)/{AP,LAT}/ into one record per patient "
        "with patient-level, class-stratified folds. Bad patients are listed with reasons and "
        "left out; the exit status is 1 unless --allow-incomplete.",
    )
    _add_datalist_common(dx)
    dx.add_argument("--views", default="AP,LAT", help="views every patient must have (default AP,LAT)")
    dx.add_argument(
        "--structures",
        default=None,
        help="comma-separated masks every patient must have (default: all of the views'); "
        "'' for none, e.g. for classification only",
    )
    dx.add_argument("--no-verify", action="store_true", help="check the folder structure only; do not decode files")
    dx.set_defaults(func=_cmd_datalist_xray)
    dm = dl_sub.add_parser(
        "mri",
        help="scan a tree of MRI cases",
        description="Scan <root> for case folders holding label.nii.gz (or .nii/.png/.tif) and "
        "one entry per channel (<channel>.nii.gz, a <channel>/ DICOM series folder or "
        "<channel>.png); folds group the cases of a patient (the first folder under the root).",
    )
    _add_datalist_common(dm)
    dm.add_argument("--channels", default="T1w,T2w", help="channels every case must have (default T1w,T2w)")
    dm.add_argument(
        "--label-map",
        default=None,
        help="class name -> id, as JSON or a JSON file, the same map the bundle's --label_map takes "
        "(default the 12 MIDAS classes)",
    )
    dm.add_argument("--no-verify", action="store_true", help="check the folder structure only; do not read files")
    dm.set_defaults(func=_cmd_datalist_mri)

    imp = sub.add_parser("import", help="convert public annotation formats into the ELL888 layout")
    imp_sub = imp.add_subparsers(dest="what", required=True, metavar="WHAT")
    il = imp_sub.add_parser(
        "landmarks",
        help="vertebra-corner landmarks (AASCE CSV or COCO keypoints) to films and vertebra masks",
        description="Write <out>/<class>/ID (<n>)/<VIEW>/<VIEW>.jpg with a 1-bit vertebra mask drawn from each "
        "body's four corners, and <out>/landmarks.json with every level's corners, the published angles when the "
        "source has them, and the source film of each patient. Films with missing corners, points outside the "
        "image, self-intersecting quadrilaterals or a missing image are listed and left out; the exit status is 1 "
        "unless --allow-incomplete.",
    )
    il.add_argument("--format", required=True, choices=["aasce", "coco-keypoints"], help="annotation format")
    il.add_argument(
        "--src",
        required=True,
        type=Path,
        help="aasce: the folder holding data/ and labels/ (boostnet_labeldata); coco-keypoints: the JSON file",
    )
    il.add_argument("--out", required=True, type=Path, help="new dataset root (must be empty)")
    il.add_argument("--split", default="training", help="aasce: the split folder to import (default training)")
    il.add_argument(
        "--view", type=str.upper, choices=VIEW_CHOICES, default=None, help="coco-keypoints: AP or LAT (default LAT)"
    )
    il.add_argument(
        "--images", type=Path, default=None, help="coco-keypoints: folder of the images (default: the JSON's)"
    )
    il.add_argument(
        "--class",
        dest="class_name",
        default="Normal",
        choices=["Normal", "Damaged"],
        help="class folder for every film; landmark sets do not label fractures (default Normal)",
    )
    il.add_argument("--allow-incomplete", action="store_true", help="exit 0 even when some films were left out")
    il.set_defaults(func=_cmd_import_landmarks)

    pk = sub.add_parser(
        "package",
        help="validate a bundle, export TorchScript and write a zip to share",
        description="Validate configs/metadata.json against the MONAI schema (and that its version "
        "has a changelog entry), export TorchScript and check it against the eager model, then zip "
        "configs, docs, LICENSE, weights and a data-licence note as <name>_v<version>.zip. A model trained "
        "with a variant or overrides is packaged with the same --config and --override, which are baked "
        "into the zip's train, evaluate and inference configs.",
    )
    pk.add_argument("bundle_dir", type=Path, help="the bundle folder")
    pk.add_argument("--out", type=Path, default=Path("dist"), help="zip file or folder (default dist/)")
    pk.add_argument("--ckpt", type=Path, default=None, help="trained weights (default <bundle>/models/model.pt)")
    pk.add_argument("--schema", type=Path, default=None, help="MONAI metadata schema (default: the bundled copy)")
    pk.add_argument("--onnx", action="store_true", help="also export ONNX (needs onnx and onnxruntime)")
    pk.add_argument(
        "--config",
        type=Path,
        action="append",
        default=[],
        help="a variant config file the model was trained with (e.g. configs/attention_unet.json); repeatable",
    )
    pk.add_argument(
        "--override",
        type=_parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override the model was trained with, e.g. \"structures=['Ap_Vertebra']\"; repeatable",
    )
    pk.add_argument(
        "--trained-on",
        default="synthetic spine data from spine_monai's generator",
        help="what the weights were trained on, for DATA_LICENSE.txt",
    )
    pk.set_defaults(func=_cmd_package)

    _add_measure_parser(sub)
    _add_analyze_parser(sub)
    _add_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
