# The Python library (pyproject.toml, cbindings/, src/hvfilter/, tests/python/).
#
#   make deps     also builds and installs hvfilter into .venv, again whenever
#                 its sources (Python, the C shim, the ABI header or the
#                 evaluator it compiles in) change
#   make pytest   the Xen-free test suite (part of `make test`)
#   make demo     install everything, then run `hvfilter demo`
#   make lint     mypy --strict src and ruff check

# libxen-dev: Xen's public headers (/usr/include/xen) and libxencall.
APT_PACKAGES += gcc python3 python3-venv python3-dev libxen-dev

HVF_SOURCES := $(shell find src cbindings -type f \( -name '*.py' -o -name '*.pyi' \
                   -o -name '*.c' -o -name '*.h' \) 2>/dev/null) \
               xen/include/public/hvfilter.h xen/common/hvfilter_eval.c \
               xen/common/hvfilter_eval.h pyproject.toml setup.py MANIFEST.in

# The first install (in $(VENV)/.stamp) brings the dependencies and the dev
# tools; later rebuilds only rebuild hvfilter itself, without a fresh build
# environment.
$(VENV)/.hvfilter: $(VENV)/.stamp $(HVF_SOURCES)
	$(PY) -m pip install -q --no-deps --no-build-isolation .
	touch $@

deps: $(VENV)/.hvfilter

# `make test` (and so the README's command) works from a fresh clone: the
# dependencies come first.
test: deps

TEST_PARTS += pytest

.PHONY: pytest demo lint
pytest: deps
	$(PY) -m pytest -q

demo: deps
	$(VENV)/bin/hvfilter demo

lint: deps
	$(VENV)/bin/mypy --strict src
	$(VENV)/bin/ruff check

BENCH_PARTS += bench-python
.PHONY: bench-python
bench-python: deps
	$(VENV)/bin/hvfilter bench --json bench/results/python.json

.PHONY: api-docs
api-docs: deps
	$(PY) docs/gen_api.py
