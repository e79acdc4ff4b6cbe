#!/usr/bin/env bash
# The checks owed to a GPU, in one run short enough for a lent machine's few minutes (docs/performance.md, "GPU"):
# the CUDA cases of the GPU options' tests (channels last and the cache on the device must train the default's model,
# with AMP on), `make bench`'s table with the GPU variants (default, channels_last, cache_on_device,
# cache_on_device_thread), then `make bench-layout`'s interleaved channels-first / channels-last pairs (the
# segmentation networks and both classifiers), which decide the GPU default of channels_last.
#
# The machine has PyTorch but no package registry: `make gpu-wheels` puts the other packages the bundles need into
# .whl here, to be carried along. On the machine, from the repository root:
#   bash pipelines/gpu_check.sh OUT_DIR
# It writes env.txt, tests.log, layout.log, layout.json, bench.log and bench.json into OUT_DIR. PYTHON (default
# python3), LAYOUT_ARGS and BENCH_ARGS (extra arguments of pipelines.bench_layout and pipelines.bench) and
# BENCH_TIMEOUT (seconds, default 330) adjust it; with the tests' 120 s and the layout's 90 s the run stays inside
# one 10-minute call.
set -uo pipefail
out=${1:?usage: bash pipelines/gpu_check.sh OUT_DIR}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/spine_site .whl/*.whl \
        || { echo "gpu_check: installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH=/tmp/spine_site${PYTHONPATH:+:$PYTHONPATH}
fi

"$py" - <<'EOF' 2>&1 | tee "$out/env.txt"
import os, platform
import monai, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}, {gpu}, "
      f"{os.cpu_count()} CPUs")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpu_check: the packages do not import" >&2; exit 2; }

status=0
timeout 120 "$py" -m pytest -q -p no:cacheprovider -rs tests/test_device_options.py 2>&1 | tee "$out/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# The caches fill with one thread per core: filling them is not part of any figure.
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-330}" "$py" -m pipelines.bench --out /tmp/spine_bench --cache-workers "$(nproc)" \
    ${BENCH_ARGS:-} 2>&1 | grep -v " - INFO - " | tee "$out/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
cp /tmp/spine_bench/bench.json "$out/" 2>/dev/null || status=1

# On the sets the bench made, also when its measurements ran out of time. Five steps a block: a GPU's steps take
# milliseconds, and blocks of a second each (the default) would not fit the four networks into the 90 s.
# shellcheck disable=SC2086
timeout 90 "$py" -m pipelines.bench_layout --out /tmp/spine_bench --steps 5 ${LAYOUT_ARGS:-} 2>&1 \
    | grep -v " - INFO - " \
    | tee "$out/layout.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
cp /tmp/spine_bench/layout.json "$out/" 2>/dev/null || status=1

exit $status
