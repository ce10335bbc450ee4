# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv on first use.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch first: this exact pin is the local CPU wheel; anything else would pull CUDA builds.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[train,data,sim,serve,libero,quant,dev]"
	# LIBERO's robosuite pulls opencv-python, which shares the cv2 folder with our opencv-python-headless;
	# reinstall ours last so cv2 is one whole package (the headless one: no libGL needed).
	$(PIP) install -q --force-reinstall --no-deps opencv-python-headless
	@$(PY) -c "import importlib.util,sys; sys.exit(1 if importlib.util.find_spec('torchvision') else 0)" || \
	  (echo "torchvision is installed in .venv; it breaks transformers on CPU torch. Remove it." && exit 1)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m openvla.cli demo

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest tests -x --durations=15

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf .venv runs outputs demo_out
