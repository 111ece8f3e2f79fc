# flatpak-sysext. `make test` and `make demo` bootstrap what they need on a fresh
# Debian/Ubuntu machine: a virtualenv, and (as root) flatpak, bubblewrap and gcc via apt.

PYTHON ?= python3
PREFIX ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
BINDIR ?= $(EXEC_PREFIX)/bin
DATAROOTDIR ?= $(PREFIX)/share
DATADIR ?= $(DATAROOTDIR)
MANDIR ?= $(DATAROOTDIR)/man
SYSCONFDIR ?= /etc
DESTDIR ?=

VENV ?= .venv
VENV_MIN ?= .venv-min
# The oldest Python the package supports, where the machine has it (pyenv here does).
PYTHON_MIN ?= $(firstword $(foreach p,python3.9 $(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python3.9),\
	$(shell $(p) -c 'import venv' >/dev/null 2>&1 && echo $(p))) $(PYTHON))
VPY := $(VENV)/bin/python
# Debian 12's versions: the oldest a current LTS distribution ships (SPEC §10).
MIN_DEPS := pyelftools==0.29 jsonschema==4.10.3

APT_PACKAGES := flatpak bubblewrap gcc libc6-dev strace gnupg
PYTEST_ARGS ?=

.PHONY: all deps venv test test-min lint demo bench clean

all: venv

deps:
	@missing=""; \
	for pair in flatpak:flatpak bwrap:bubblewrap gcc:gcc strace:strace gpg:gnupg; do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || \
	  missing="$$missing libc6-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "Missing:$$missing (install them, or run as root to have apt install them)"; \
	  fi; \
	fi

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,lint]'
	touch $@

venv: $(VENV)/.stamp

$(VENV_MIN)/.stamp: pyproject.toml
	$(PYTHON_MIN) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q $(MIN_DEPS) 'pytest>=7' 'hypothesis>=6'
	$(VENV_MIN)/bin/python -m pip install -q --no-deps -e .
	touch $@

test: deps venv $(VENV_MIN)/.stamp
	$(VPY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-min

# The same suite on the oldest supported Python, pyelftools and jsonschema.
test-min: $(VENV_MIN)/.stamp
	$(VENV_MIN)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check flatpak_sysext tests bench
	$(VENV)/bin/mypy

demo: deps venv
	$(VPY) demo/demo.py

# The figures of README's "Performance" section: a few minutes, as root (bench/bench.py).
bench: deps venv
	$(VPY) bench/bench.py

clean:
	rm -rf $(VENV) $(VENV_MIN) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
