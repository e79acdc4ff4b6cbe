"""Helpers that bundle configs call: strict override checking and small wiring functions.

``python -m monai.bundle run --max_epoch 5`` silently adds a new, unused key ``max_epoch`` and trains with
the default. A bundle puts ``"$spine_monai.bundle.check_overrides()"`` first in its ``initialize`` list so
that such a typo stops the run with the list of unknown keys and the closest known ones.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import logging
import os
import pydoc
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser, ConfigWorkflow
from monai.bundle.config_item import ComponentLocator

__all__ = [
    "check_overrides",
    "config_ids",
    "check_config_ids",
    "bundle_config_files",
    "as_bool",
    "parse_override",
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


def _find_workflow() -> tuple[ConfigWorkflow | None, dict | None, list[str]]:
    workflow, overrides, loaded = None, None, []
    frame = inspect.currentframe()
    while frame is not None:
        loc = frame.f_locals
        if workflow is None and isinstance(loc.get("self"), ConfigWorkflow):
            workflow = loc["self"]
        if frame.f_code.co_name == "create_workflow" and isinstance(loc.get("_args"), dict):
            overrides = {k: v for k, v in loc["_args"].items() if k not in _WORKFLOW_ARGS}
            cfg = loc.get("config_file")
            loaded = [str(c) for c in ([cfg] if isinstance(cfg, (str, os.PathLike)) else list(cfg or []))]
            break
        frame = frame.f_back
    return workflow, overrides, loaded


def check_overrides() -> bool:
    """Raise if a command-line override names a key that no config file of this bundle defines.

    Call it from a config's ``initialize`` list. It finds the running ``ConfigWorkflow`` on the call stack;
    when run through ``monai.bundle run`` it checks each override id exactly (``train#trainer#max_epoch``
    fails, ``train#trainer#max_epochs`` passes). A new argument of a ``_target_`` component passes only when
    the component's signature takes it (``network_def#channel`` fails against ``UNet``), so a typo stops the run
    before any data is read. An override that only another config of the bundle uses (``--tolerance_px`` given to
    ``train.json``) is logged as ignored. When the overrides themselves are not visible (a ``ConfigWorkflow``
    built directly), it checks that every top-level key is defined in some config file of the bundle.

    Returns:
        True, so it can sit in an expression list.

    Raises:
        UnknownOverrideError: naming every unknown key and suggesting the closest known ones.
    """
    workflow, overrides, loaded = _find_workflow()
    if workflow is None:
        return True
    merged = workflow.parser.get()
    if overrides is not None:
        candidates = [k.replace("::", SEP) for k in overrides]
    else:
        candidates = [k for k in merged if k not in _RESERVED]
    check_config_ids(candidates, bundle_config_files(Path(workflow.config_root_path), loaded), [merged])
    if overrides is not None and loaded:
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


def parse_override(text: str) -> tuple[str, object]:
    """A ``KEY=VALUE`` override from a command line, with VALUE read as ``monai.bundle run --KEY VALUE`` reads it.

    Args:
        text: e.g. ``spatial_size=[256, 160]`` or ``network_def#_target_=AttentionUnet``.

    Returns:
        (key, value): the value as a Python literal where it parses as one (``[256, 160]``, ``0.5``, ``True``), else
        the text itself.

    Raises:
        ValueError: when ``text`` has no ``=`` or no key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is not KEY=VALUE")
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


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
