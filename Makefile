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

# The demo model (trained by benchmarks/record_demo_model.py's TRAIN_COMMAND) and the dataset it was trained on.
DEMO_MODEL := assets/demo/yolov6n_synth.safetensors
DEMO_DATA := runs/synth
DEMO := $(VENV)/bin/yolodeploy

$(DEMO_DATA)/annotations/instances_val.json: | $(STAMP)
	$(DEMO) data synth $(DEMO_DATA) --images 2500 --classes 4 --img-size 256 --seed 0 --overwrite

demo: setup $(DEMO_DATA)/annotations/instances_val.json
	$(DEMO) info $(DEMO_MODEL)
	$(DEMO) reparam $(DEMO_MODEL) -o runs/demo/yolov6n_synth_deploy.safetensors --img 224
	$(DEMO) eval $(DEMO_MODEL) --data $(DEMO_DATA) --img 224 --json runs/demo/eval_torch.json
	$(DEMO) export runs/demo/yolov6n_synth_deploy.safetensors -o runs/demo/yolov6n_synth.onnx --dynamic-batch --img 224
	$(DEMO) eval runs/demo/yolov6n_synth.onnx --data $(DEMO_DATA) --img 224 --json runs/demo/eval_ort.json
	$(DEMO) export runs/demo/yolov6n_synth_deploy.safetensors -o runs/demo/yolov6n_synth_nms.onnx --dynamic-batch --img 224 --nms ort
	$(DEMO) bench runs/demo/yolov6n_synth_nms.onnx --backend ort --bs 1 --bs 32 --img 224 --iters 10 --json runs/demo/bench_ort.json
	$(DEMO) quantize $(DEMO_MODEL) --data $(DEMO_DATA) --ptq --sensitive-topk 6 --qat --epochs 1 --img 224 --calib-images 250 --uint8-input --bench --bs 1 --bs 32 -o runs/demo/quant --json runs/demo/quant.json
	$(DEMO) build-engine runs/demo/quant/int8_top6_ort.onnx --int8 --backend ort --tune-bs 32 -o runs/demo/quant/int8_top6.ort.onnx
	$(DEMO) bench runs/demo/quant/int8_top6.ort.onnx --backend ort --bs 1 --bs 32 --img 224 --iters 10 --json runs/demo/bench_int8_top6.json
	$(DEMO) build-engine runs/demo/quant/ptq_ort.onnx --int8 --backend openvino -o runs/demo/quant/ptq.xml
	$(DEMO) bench runs/demo/yolov6n_synth.onnx --backend openvino --bs 1 --bs 32 --img 224 --iters 10 --json runs/demo/bench_openvino_fp32.json
	$(DEMO) bench runs/demo/quant/ptq.xml --bs 1 --bs 32 --img 224 --iters 10 --json runs/demo/bench_openvino_int8.json
	cat runs/demo/quant/quant_report.md

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/reparam_latency.py --json benchmarks/results/reparam_latency.json
	$(PY) benchmarks/train_throughput.py --json benchmarks/results/train_throughput.json

bench-suite: setup
	$(PY) benchmarks/run_suite.py --wait-idle 300 --retries 3

lint: setup
	$(VENV)/bin/ruff check yolodeploy tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
