# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# On machines with a local CPU build this spec installs it; any other spec downloads gigabytes of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow lint demo clean bench bench-layout bench-synth bench-xray bench-xray-1900 bench-xray-hires bench-mri bench-cls bench-measure bench-analyze bench-real gpu-wheels

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lint: install
	$(BIN)/ruff check spine_monai pipelines tests

# tests/test_standalone.py installs TORCH_SPEC and the spine-monai wheel into a fresh virtual environment.
test: lint
	TORCH_SPEC="$(TORCH_SPEC)" $(BIN)/python -m pytest -q -m "not slow"

# The long training and install runs that make test leaves out; .ci/run runs both tiers.
test-slow: install
	TORCH_SPEC="$(TORCH_SPEC)" $(BIN)/python -m pytest -q -m slow

demo: install
	$(BIN)/python -m pipelines.demo

bench-synth: install
	$(BIN)/python -m pipelines.bench_synth

clean:
	rm -rf $(VENV) $(SMP_VENV) build dist *.egg-info .pytest_cache .ruff_cache demo_output bench_output
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

bench-xray: install
	$(BIN)/python -m pipelines.bench_xray

# The same benchmark on films of the ELL888 size: 3 px lines under a 7.5x downsampling, as on the real films.
bench-xray-1900: install
	$(BIN)/python -m pipelines.bench_xray --size 1900x2900 --out bench_output/xray_1900

# The same films with configs/hires.json, a 768x512 grid: results beside the default's in results.json.
bench-xray-hires: install
	$(BIN)/python -m pipelines.bench_xray --size 1900x2900 --out bench_output/xray_1900 --variant hires.json

bench-mri: install
	$(BIN)/python -m pipelines.bench_mri

# The vertebra-level classifier reads the segmentation bundles' masks: run `make bench-xray` first.
bench-cls: install
	$(BIN)/python -m pipelines.bench_cls --out bench_output/cls480 --cases 480 --epochs 40 --predict-masks \
		--mask-structures Ap_Vertebra Lat_Vertebra Lat_Anterior_Vertebral_Line Lat_Posterior_Vertebral_Line \
		--models vertebra vertebra_ap vertebra_lat

bench-measure: install
	$(BIN)/python -m pipelines.bench_measure

# spine-monai analyze from packaged bundles on 1900x2900 synthetic films: seconds per patient, both views and the classifier.
bench-analyze: install
	$(BIN)/python -m pipelines.bench_analyze

# The bundles on public real images, beside a plain smp U-Net loop at the same wall time (pipelines/bench_real.py).
# AASCE: the AASCE 2019 folder (boostnet_labeldata); MRI: FastCleverSeg's ImageDatasets folder. segmentation_models_pytorch
# needs torchvision, which has no CPU build beside TORCH_SPEC: the baseline gets its own environment, .venv-smp.
SMP_VENV := .venv-smp
SMP_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
$(SMP_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(SMP_VENV)/bin/python || $(PYTHON) -m venv $(SMP_VENV)
	$(SMP_VENV)/bin/python -m pip install --quiet $(SMP_TORCH_SPEC)
	$(SMP_VENV)/bin/python -m pip install --quiet segmentation-models-pytorch -e .
	touch $@

bench-real: install $(SMP_VENV)/.installed
	@test -n "$(AASCE)" || { echo "usage: make bench-real AASCE=DIR [MRI=DIR]; see pipelines/bench_real.py" >&2; exit 2; }
	$(BIN)/python -m pipelines.bench_real --aasce "$(AASCE)" $(if $(MRI),--mri "$(MRI)",--parts ap baseline)

bench: install
	$(BIN)/python -m pipelines.bench

# Channels first against channels last, the bare training step in interleaved pairs (the CPU default's evidence).
bench-layout: install
	$(BIN)/python -m pipelines.bench_layout

# Wheels of the packages a lent GPU machine lacks (it has PyTorch, Python 3.12 and no registry), at this venv's
# versions, for pipelines/gpu_check.sh; .whl is git-ignored and carried to the machine.
GPU_WHEELS := monai|pytorch-ignite|nibabel|pydicom|fire|termcolor
gpu-wheels: install
	rm -rf .whl
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
		$$($(BIN)/python -m pip freeze | grep -i -E '^($(GPU_WHEELS))==')
	ls .whl
