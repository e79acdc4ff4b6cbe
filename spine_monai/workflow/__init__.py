"""Everything a bundle config calls that is not spine logic.

- :mod:`~spine_monai.workflow.setup`: the one call of a config's ``initialize``;
- :mod:`~spine_monai.workflow.config`: config keys and overrides, read and checked once;
- :mod:`~spine_monai.workflow.runtime`: process memory and tensor layout;
- :mod:`~spine_monai.workflow.loaders`: DataLoader workers and the device cache;
- :mod:`~spine_monai.workflow.distributed`: multi-process runs;
- :mod:`~spine_monai.workflow.checkpoint`: checkpoint files and the input grid and identity they record.
"""

from spine_monai.workflow.checkpoint import (
    INPUT_GRID_KEY,
    MODEL_IDENTITY_KEY,
    check_model_record,
    find_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    record_input_grid,
)
from spine_monai.workflow.config import (
    OVERLAYS,
    OverrideSyntaxError,
    UnknownOverrideError,
    as_bool,
    bundle_config_files,
    check_bundle_overrides,
    check_config_ids,
    check_overrides,
    class_names,
    cli_overrides,
    config_ids,
    parse_override,
    parse_overrides,
    read_bundle_config,
    run_config_files,
)
from spine_monai.workflow.distributed import LazySummaryWriter, end_process_group, rank_zero_only
from spine_monai.workflow.loaders import device_cache, light_loader_workers, loader_workers, untracked_worker_init
from spine_monai.workflow.runtime import MALLOC_ENV, Runtime, channels_last_by_default, keep_freed_memory, memory_format
from spine_monai.workflow.setup import setup
from spine_monai.workflow.tracking import tracked_handlers

__all__ = [
    "OVERLAYS",
    "INPUT_GRID_KEY",
    "MALLOC_ENV",
    "MODEL_IDENTITY_KEY",
    "LazySummaryWriter",
    "Runtime",
    "UnknownOverrideError",
    "as_bool",
    "bundle_config_files",
    "channels_last_by_default",
    "check_config_ids",
    "check_model_record",
    "check_overrides",
    "class_names",
    "cli_overrides",
    "config_ids",
    "device_cache",
    "end_process_group",
    "find_checkpoint",
    "keep_freed_memory",
    "latest_checkpoint",
    "light_loader_workers",
    "load_checkpoint",
    "loader_workers",
    "memory_format",
    "OverrideSyntaxError",
    "check_bundle_overrides",
    "parse_override",
    "parse_overrides",
    "rank_zero_only",
    "read_bundle_config",
    "run_config_files",
    "record_input_grid",
    "setup",
    "tracked_handlers",
    "untracked_worker_init",
]
