# System and Python dependencies.
#
# Every part appends the Debian packages it needs to APT_PACKAGES in its own
# mk/<part>.mk; `make deps` installs the union (as root, or through sudo) and
# creates the project's virtual environment in .venv.

APT_PACKAGES := make gcc python3 python3-venv python3-dev
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps apt-deps
deps: apt-deps $(VENV)/.stamp

apt-deps:
	@missing=$$(for p in $(sort $(APT_PACKAGES)); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "deps: installing Debian packages:" $$missing; \
	    $(SUDO) apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: all Debian packages present"; fi

# The virtual environment.  It is rebuilt when the packaging files change.
# The Python part of the project (pyproject.toml) is installed into it once it
# exists; the `dev` extra brings the test and lint tools.
$(VENV)/.stamp: $(wildcard pyproject.toml setup.py)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if [ -f pyproject.toml ]; then $(PY) -m pip install -q '.[dev]'; fi
	touch $@
