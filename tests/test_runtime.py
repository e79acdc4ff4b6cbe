"""keep_freed_memory: glibc keeps large freed blocks in the heap, unless the user or the bundle says otherwise."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
from conftest import REPO

from spine_monai.workflow import MALLOC_ENV

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's"
)

# In a fresh interpreter (mallopt is process-wide): apply the setting, then allocate and free 64 MiB through torch
# and read glibc's own account of it. Without the setting glibc maps a block that size with mmap (counted in
# hblkhd) and unmaps it on free; with it the block comes from the heap (arena) and stays there once freed.
_PROBE = """
import ctypes, json, sys
import torch
from spine_monai.workflow import keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
# The key as text, as `--keep_freed_memory false` passes it from the command line.
applied = keep_freed_memory(sys.argv[1])
before = libc.mallinfo2()
block = torch.empty(64 * 2**20, dtype=torch.uint8)
during = libc.mallinfo2()
del block
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "mmapped": during.hblkhd - before.hblkhd,
                  "kept_free": after.fordblks - before.fordblks}))
"""


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], env={**clean, **env}, cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_large_blocks_stay_in_the_heap():
    kept = _probe("on")
    assert kept["applied"] is True
    assert kept["mmapped"] == 0
    # Nearly all of the block stays free in the heap (small allocations between the two readings may take a few
    # KiB of it); without the setting none of it does.
    assert kept["kept_free"] >= 63 * 2**20


def test_disabled_leaves_glibc_defaults():
    system = _probe("false")
    assert system["applied"] is False
    assert system["mmapped"] >= 64 * 2**20


def test_user_allocator_settings_win():
    # The user asked for mmap of every block above 1 MiB: the call must not undo that.
    user = _probe("on", MALLOC_MMAP_THRESHOLD_=str(2**20))
    assert user["applied"] is False
    assert user["mmapped"] >= 64 * 2**20


@pytest.mark.parametrize("bundle", ["spine_xray_ap_seg", "spine_xray_lat_seg", "spine_mri_seg", "spine_xray_cls"])
def test_every_training_config_applies_it(bundle):
    configs = REPO / "bundles" / bundle / "configs"
    train = json.loads((configs / "train.json").read_text())
    assert train["keep_freed_memory"] is True
    for name in ("train.json", "multi_gpu_train.json"):
        initialize = json.loads((configs / name).read_text())["initialize"]
        (setup,) = initialize  # one call sets the process up, keep_freed_memory among the rest
        assert setup.startswith("$spine_monai.workflow.setup("), name
        assert "keep_freed_memory=@keep_freed_memory" in setup, name
