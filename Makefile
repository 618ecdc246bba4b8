# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install, run examples/quickstart.yaml on embedded local Ray and
#               confirm its best schedule on fresh seeds
#   make test   create .venv, install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Without a GPU, torch is installed first from this requirement so pip does not pull a
# multi-GB CUDA build. Point it at a CPU wheel index or another version if you like.
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: installing torch as resolved by pip"; \
	else \
	  echo "no GPU: installing $(TORCH_CPU) (CPU build)"; \
	  $(PY) -m pip install --quiet "$(TORCH_CPU)"; \
	fi
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The sweep, then its best searched schedule and the baselines again on 3 fresh seeds,
# reported on the test split with intervals and verdicts.
demo: venv
	rm -rf results/quickstart
	$(PY) -m search run examples/quickstart.yaml --storage results
	$(PY) -m search confirm results/quickstart --top 1 --seeds 3

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything except tests marked slow.
test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: venv
	set -e; for script in benchmarks/bench_*.py; do $(PY) $$script; done

lint: venv
	$(PY) -m ruff check search spaces trainables analysis tests benchmarks
	$(PY) -m ruff format --check search spaces trainables analysis tests benchmarks

clean:
	rm -rf $(VENV) results .pytest_cache
