# The two commands the README starts with:
#   make demo   set up .venv (CPU torch first) and run the main job on the CPU default
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Where to get a CPU build of torch. Empty = pip's configured indexes (on our machines a local CPU wheel).
# Elsewhere on Linux use: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
STAMP := $(VENV)/.yolodeploy-installed

.PHONY: setup demo test bench bench-suite lint clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -c "import torch; print('torch', torch.__version__, '(CUDA build)' if torch.version.cuda else '(CPU build)')"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/yolodeploy models "yolov6n*"
	$(VENV)/bin/yolodeploy demo --model yolov6n --out runs/demo
	$(VENV)/bin/yolodeploy export runs/demo/yolov6n_deploy.safetensors -o runs/demo/yolov6n.onnx --dynamic-batch --img 320 --nms ort
	$(VENV)/bin/yolodeploy bench runs/demo/yolov6n.onnx --backend ort --bs 1 --bs 4 --img 320 --iters 10 --json runs/demo/bench_ort.json

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/reparam_latency.py --json benchmarks/results/reparam_latency.json

bench-suite: setup
	$(PY) benchmarks/run_suite.py --wait-idle 300 --retries 3

lint: setup
	$(VENV)/bin/ruff check yolodeploy tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
