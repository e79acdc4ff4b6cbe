"""Config keys and overrides, read and checked in one place.

``python -m monai.bundle run --max_epoch 5`` silently adds a new, unused key ``max_epoch`` and trains with the
default. :func:`check_overrides` (called by :func:`spine_monai.workflow.setup` from a bundle's ``initialize``) stops
such a run with the list of unknown keys and the closest known ones. It reads the overrides from the command line as
MONAI's runner (Fire) parses it, not from the runner's internals. :func:`parse_override` reads a ``KEY=VALUE``
override of spine-monai's own commands the same way, and :func:`as_bool` reads a boolean that came as text.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import logging
import os
import pydoc
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator

__all__ = [
    "check_overrides",
    "cli_overrides",
    "config_ids",
    "check_config_ids",
    "bundle_config_files",
    "as_bool",
    "OverrideSyntaxError",
    "check_bundle_overrides",
    "parse_override",
    "parse_overrides",
    "run_config_files",
    "OVERLAYS",
    "read_bundle_config",
    "class_names",
    "UnknownOverrideError",
]

# Arguments of monai.bundle.run / create_workflow / ConfigWorkflow that are not config overrides.
_WORKFLOW_ARGS = {
    "meta_file",
    "logging_file",
    "init_id",
    "run_id",
    "final_id",
    "tracking",
    "workflow_type",
    "properties_path",
    "config_file",
    "workflow_name",
    "args_file",
}
_RESERVED = {"_meta_", "_requires_"}
SEP = "#"


class UnknownOverrideError(KeyError):
    """An override names a config key that no config file of the bundle defines."""

    def __str__(self) -> str:
        return str(self.args[0])


def config_ids(config, prefix: str = "") -> set[str]:
    """All ids of a parsed config, flattened with ``#`` (``train#trainer#max_epochs``)."""
    ids: set[str] = set()
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for k, v in items:
        key = f"{prefix}{SEP}{k}" if prefix else str(k)
        ids.add(key)
        ids |= config_ids(v, key)
    return ids


def bundle_config_files(config_root: Path, loaded: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The config files in ``config_root`` (not ``metadata.json``) and those in ``loaded``, sorted."""
    files = {p for ext in ("*.json", "*.yaml", "*.yml") for p in config_root.glob(ext) if p.name != "metadata.json"}
    files |= {Path(f) for f in loaded}
    return sorted(files)


def cli_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, object]] | None:
    """The config files and the overrides of a ``python -m monai.bundle run`` command line.

    The tokens after the subcommand are read as MONAI's runner reads them (Fire: ``--key value``, ``--key=value``, a
    lone ``--flag`` is true, values parsed as Python literals where they parse); an ``--args_file`` is read beneath
    the command line's own keys, as ``monai.bundle run`` merges it.

    Args:
        argv: a process's ``sys.argv``.

    Returns:
        (config files, overrides without the runner's own arguments), or ``None`` when ``argv`` is not such a
        command line (a bundle run from Python, a test runner).
    """
    if len(argv) < 2 or Path(argv[0]).parts[-3:] != ("monai", "bundle", "__main__.py") or argv[1] != "run":
        return None
    from fire.parser import DefaultParseValue

    given: dict[str, object] = {}
    tokens = list(argv[2:])
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--"):
            continue
        key, sep, value = token[2:].partition("=")
        if sep:
            given[key] = DefaultParseValue(value)
        elif tokens and not tokens[0].startswith("--"):
            given[key] = DefaultParseValue(tokens.pop(0))
        else:
            given[key] = True
    args: dict[str, object] = {}
    if given.get("args_file"):
        args.update(ConfigParser.load_config_file(str(given["args_file"])))
    args.update(given)
    cfg = args.get("config_file")
    files = [str(c) for c in ([cfg] if isinstance(cfg, (str, os.PathLike)) else list(cfg or []))]
    return files, {k: v for k, v in args.items() if k not in _WORKFLOW_ARGS}


def check_overrides(argv: Sequence[str] | None = None) -> bool:
    """Raise if a command-line override names a key that no config file of this bundle defines.

    Each override id of a ``python -m monai.bundle run`` command line is checked exactly (``train#trainer#max_epoch``
    fails, ``train#trainer#max_epochs`` passes). A new argument of a ``_target_`` component passes only when the
    component's signature takes it (``network_def#channel`` fails against ``UNet``), so a typo stops the run before
    any data is read. An override that only another config of the bundle uses (``--tolerance_px`` given to
    ``train.json``) is logged as ignored. Bundles run from Python (``monai.bundle.run``) are checked by their caller
    (:func:`check_config_ids`), as spine-monai's own commands do.

    Args:
        argv: the command line; ``sys.argv`` when ``None``.

    Returns:
        True, so it can sit in an expression list.

    Raises:
        UnknownOverrideError: naming every unknown key and suggesting the closest known ones.
    """
    parsed = cli_overrides(sys.argv if argv is None else argv)
    if parsed is None or not parsed[0]:
        return True
    loaded, overrides = parsed
    candidates = [k.replace("::", SEP) for k in overrides]
    values = {k.replace("::", SEP): v for k, v in overrides.items()}
    merged = ConfigParser()
    merged.read_config(loaded)
    check_config_ids(candidates, bundle_config_files(Path(loaded[0]).parent, loaded), [merged.get()], values)
    _log_unused(candidates, loaded)
    return True


def _log_unused(candidates: Iterable[str], loaded: Sequence[str]) -> None:
    used: set[str] = set()
    for f in loaded:
        if Path(f).is_file():
            used |= config_ids(ConfigParser.load_config_file(f))
    unused = [k for k in candidates if k.split(SEP)[0] not in used and k not in _RESERVED]
    if unused:
        names = ", ".join(Path(f).name for f in loaded)
        logging.getLogger(__name__).warning(
            "override(s) %s: defined by another config of this bundle, not by %s; ignored in this run",
            ", ".join(unused),
            names,
        )


def check_config_ids(
    candidates: Iterable[str],
    files: Sequence[str | os.PathLike],
    configs: Iterable[dict],
    values: Mapping[str, object] | None = None,
) -> None:
    """Raise if some of ``candidates`` is defined by none of ``files``.

    An id is also accepted when it names a new argument of a ``_target_`` component in one of ``configs`` and the
    component's signature takes that argument (or any keyword argument).

    Args:
        candidates: ids with ``#`` separators (``train#trainer#max_epochs``).
        files: the config files whose ids are known.
        configs: parsed configs whose components may take a new argument.
        values: the overrides' values, where a component's ``_target_`` is itself overridden and ``configs`` do not
            hold the new one yet.

    Raises:
        UnknownOverrideError: naming every unknown id, the closest known ones, and the files searched.
    """
    known: set[str] = set()
    for f in files:
        if Path(f).is_file():
            known |= config_ids(ConfigParser.load_config_file(f))
    configs = list(configs)
    values = dict(values or {})
    lines = []
    for key in candidates:
        if key in known or key in _RESERVED:
            continue
        parent, _, arg = key.rpartition(SEP)
        targets = []
        if parent and parent in known:
            targets = [values.get(f"{parent}{SEP}_target_", _target_of(c, parent)) for c in configs]
            targets = [t for t in targets if t is not None]
            if any(_takes_argument(t, arg) is not False for t in targets):
                continue
        pool = known | {f"{parent}{SEP}{name}" for t in targets for name in _parameters(t)}
        close = _suggest(key, pool)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        if targets:
            hint = f" ({targets[0]} takes no argument {arg!r})" + hint
        lines.append(f"  - {key}{hint}")
    if lines:
        names = ", ".join(Path(f).name for f in files)
        raise UnknownOverrideError(
            f"unknown config key(s) for this bundle; no config file ({names}) defines them:\n" + "\n".join(lines)
        )


# Keys every MONAI component takes besides its constructor's arguments.
_COMPONENT_KEYS = {"_target_", "_disabled_", "_requires_", "_desc_", "_mode_"}


def _locate(target) -> object | None:
    """The class or function a ``_target_`` names, or ``None`` when it is an expression or cannot be found."""
    if not isinstance(target, str) or not target or target[0] in "$@%":
        return None
    name = target
    if "." not in name:
        module = ComponentLocator().get_component_module_name(name)
        if isinstance(module, list):
            module = module[0] if module else None
        if not module:
            return None
        name = f"{module}.{target}"
    return pydoc.locate(name)


def _parameters(target) -> list[str]:
    component = _locate(target)
    if component is None:
        return []
    try:
        return [n for n in inspect.signature(component).parameters if n not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        return []


def _takes_argument(target, arg: str) -> bool | None:
    """Whether the component ``target`` takes ``arg``; ``None`` when that cannot be told (an expression as target,
    a ``**kwargs`` signature)."""
    if arg in _COMPONENT_KEYS:
        return True
    component = _locate(target)
    if component is None:
        return None
    try:
        params = inspect.signature(component).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return arg in params


def _target_of(config: dict, id_: str):
    node = _node(config, id_)
    return node.get("_target_") if isinstance(node, dict) else None


def _suggest(key: str, known: set[str], n: int = 3) -> list[str]:
    """Known ids close to ``key``, comparing both the whole id and its last part (``max_epoch`` finds
    ``train#trainer#max_epochs``); among equally close ids, those as deep as ``key`` come first (``batchsize``
    finds the top-level ``batch_size`` before ``train#dataloader#batch_size``)."""
    last = key.rsplit(SEP, 1)[-1]
    depth = key.count(SEP)

    def rank(candidate: str) -> tuple[float, int, int]:
        whole = difflib.SequenceMatcher(None, key, candidate).ratio()
        tail = difflib.SequenceMatcher(None, last, candidate.rsplit(SEP, 1)[-1]).ratio()
        return -round(max(whole, tail), 6), abs(candidate.count(SEP) - depth), len(candidate)

    scored = sorted((rank(c), c) for c in known if not c.split(SEP)[-1].isdigit())
    return [c for r, c in scored[:n] if -r[0] >= 0.75]


def _node(config, id_: str):
    node = config
    for part in id_.split(SEP):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def as_bool(value) -> bool:
    """Read a boolean config value that may arrive from the command line as text.

    ``python -m monai.bundle run --progress_bar false`` passes the string ``'false'``, which Python treats
    as true; this accepts true/false, yes/no, on/off and 1/0 in any case.

    Raises:
        ValueError: for anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


class OverrideSyntaxError(argparse.ArgumentTypeError, ValueError):
    """A command-line override that is not ``KEY=VALUE``; argparse shows its message when it is a ``type=``."""


def parse_override(text: str) -> tuple[str, object]:
    """A ``KEY=VALUE`` override from a command line, with VALUE read as ``monai.bundle run --KEY VALUE`` reads it.

    Usable as an argparse ``type=``: a malformed override is reported with its text.

    Args:
        text: e.g. ``spatial_size=[256, 160]`` or ``network_def#_target_=AttentionUnet``.

    Returns:
        (key, value): the value as a Python literal where it parses as one (``[256, 160]``, ``0.5``, ``True``), else
        the text itself.

    Raises:
        OverrideSyntaxError: a ``ValueError`` for ``text`` without ``=`` or without a key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise OverrideSyntaxError(f"override {text!r} is not KEY=VALUE")
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def parse_overrides(items: Iterable[str]) -> dict[str, object]:
    """``KEY=VALUE`` overrides as a dict, each read by :func:`parse_override`.

    Raises:
        OverrideSyntaxError: naming every malformed one.
    """
    out: dict[str, object] = {}
    bad = []
    for item in items:
        try:
            key, value = parse_override(item)
        except OverrideSyntaxError as e:
            bad.append(str(e))
            continue
        out[key] = value
    if bad:
        raise OverrideSyntaxError("; ".join(bad))
    return out


def check_bundle_overrides(configs_dir: str | os.PathLike, overrides: Mapping[str, object]) -> None:
    """Raise if an override names an id that no config file in ``configs_dir`` defines.

    For callers that run a bundle from Python (``monai.bundle.run``), where :func:`check_overrides` cannot see the
    overrides.

    Args:
        configs_dir: the bundle's ``configs/`` folder.
        overrides: ids (``#`` or ``::`` separators) and values.

    Raises:
        UnknownOverrideError: as :func:`check_config_ids` does.
    """
    values = {k.replace("::", SEP): v for k, v in overrides.items()}
    files = bundle_config_files(Path(configs_dir))
    check_config_ids(values, files, [ConfigParser.load_config_file(f) for f in files], values)


def class_names(label_map: dict[str, int]) -> list[str]:
    """Class names in id order, checking the ids are 0..n-1 so that they index the network's output channels.

    Raises:
        ValueError: for repeated or non-contiguous ids, or no class 0.
    """
    ids = sorted(int(v) for v in label_map.values())
    if ids != list(range(len(ids))):
        raise ValueError(f"label_map ids must be 0..{len(ids) - 1} without gaps or repeats, got {ids}")
    by_id = {int(v): k for k, v in label_map.items()}
    return [by_id[i] for i in range(len(ids))]


def read_bundle_config(
    config_files: str | os.PathLike | Sequence[str | os.PathLike],
    overrides: Mapping[str, object] | None = None,
    meta_file: str | os.PathLike | None = None,
) -> ConfigParser:
    """A bundle's configs merged as ``python -m monai.bundle run`` merges them, for use from Python.

    The files are merged in order, the bundle's ``metadata.json`` is read as ``_meta_`` (the X-ray segmentation
    bundles take their view and structures from it), then ``overrides`` are set.

    Args:
        config_files: one file or several; the first one's folder is the bundle's ``configs/``.
        overrides: ids (``#`` or ``::`` separators) and values.
        meta_file: the metadata; ``metadata.json`` beside the first file when ``None``, skipped when that does not
            exist.

    Returns:
        the parser, not yet parsed.
    """
    files = [str(config_files)] if isinstance(config_files, (str, os.PathLike)) else [str(f) for f in config_files]
    parser = ConfigParser()
    parser.read_config(files)
    meta = Path(meta_file) if meta_file is not None else Path(files[0]).parent / "metadata.json"
    if meta.is_file():
        parser.read_meta(str(meta))
    if overrides:
        parser.update({k.replace("::", SEP): v for k, v in overrides.items()})
    return parser


# A bundle's overlays and the config each is merged on; MONAI's runner merges them in the order given.
OVERLAYS = {
    "evaluate.json": "train.json",
    "multi_gpu_train.json": "train.json",
    "multi_gpu_evaluate.json": "evaluate.json",
}


def run_config_files(configs_dir: str | os.PathLike, *names: str) -> list[str]:
    """The config files of one run, each overlay preceded by the configs it is merged on.

    ``run_config_files(d, "evaluate.json", "hires.json")`` gives ``[d/train.json, d/evaluate.json, d/hires.json]``,
    the list to pass as ``--config_file``.

    Args:
        configs_dir: the bundle's ``configs/`` folder.
        names: config file names in ``configs_dir``, or paths of files elsewhere (variants of your own).

    Returns:
        the paths, in merge order, each once.
    """
    ordered: list[str] = []

    def add(name: str) -> None:
        if name in OVERLAYS:
            add(OVERLAYS[name])
        path = str(Path(configs_dir) / name)
        if path not in ordered:
            ordered.append(path)

    for name in names:
        add(name)
    return ordered
