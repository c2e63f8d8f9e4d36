# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing, installs the pinned requirements, builds the interface packages (vision_msgs,
# panoptic_depthlab_msgs) into the venv, then runs. Finished steps are remembered in .venv/.stamps and skipped on the
# next run.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
# ROS 2 stays on this machine: loopback discovery and a domain id unique to this run.
ROS_ENV := ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=$$(( ($$$$ % 90) + 10 ))

.PHONY: setup test demo lint bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/requirements: requirements/base.txt requirements/ros.txt requirements/dev.txt requirements/colcon.txt \
		requirements/dev-nodeps.txt | $(PY)
	$(PY) -m pip install -q -r requirements/base.txt -r requirements/ros.txt -r requirements/dev.txt \
		-r requirements/colcon.txt
	$(PY) -m pip install -q --no-deps -r requirements/dev-nodeps.txt
	mkdir -p $(STAMPS) && touch $@

$(STAMPS)/vision_msgs: $(STAMPS)/requirements scripts/build_vision_msgs.sh requirements/ros-build.txt \
		$(wildcard interfaces/vision_msgs/msg/*.msg) interfaces/vision_msgs/CMakeLists.txt interfaces/vision_msgs/package.xml
	bash scripts/build_vision_msgs.sh $(abspath $(VENV))
	touch $@

$(STAMPS)/panoptic_depthlab_msgs: $(STAMPS)/vision_msgs scripts/build_vision_msgs.sh \
		$(wildcard interfaces/panoptic_depthlab_msgs/msg/*.msg) interfaces/panoptic_depthlab_msgs/CMakeLists.txt \
		interfaces/panoptic_depthlab_msgs/package.xml
	bash scripts/build_vision_msgs.sh $(abspath $(VENV)) panoptic_depthlab_msgs
	touch $@

$(STAMPS)/package: $(STAMPS)/panoptic_depthlab_msgs setup.py
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMPS)/package

test: setup
	$(ROS_ENV) $(PY) -m ruff check .
	$(VENV)/bin/lint-imports  # layer contracts: pyproject.toml [tool.importlinter]
	$(PY) scripts/typecheck_tensorrt.py  # TensorRT code vs the TensorRT 10.13 API (tensorrt-stubs, mypy)
	$(ROS_ENV) $(PY) -m pytest -q -ra test

demo: setup
	$(ROS_ENV) $(PY) -m panoptic_depthlab_ros.cli demo --out demo_out

lint: setup
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

# CPU benchmarks; each writes JSON to benchmarks/results/. Results and GPU runs: docs/performance.md.
bench: setup
	$(PY) benchmarks/postprocess.py
	$(PY) benchmarks/synth.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/inference.py --models small,r52 --sizes 512x1024 --backends torch,onnxruntime
	$(PY) benchmarks/inference.py --models small --sizes 256x512 --backends torch,onnxruntime --iterations 10 \
		--out benchmarks/results/inference_small_256x512_cpu.json
	$(ROS_ENV) $(PY) benchmarks/node_latency.py --shm

clean-venv:
	rm -rf $(VENV)
