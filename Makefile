# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
# flatpak-sysext. `make test` and `make demo` bootstrap what they need on a fresh
# Debian/Ubuntu machine: a virtualenv, and (as root) flatpak, bubblewrap and gcc via apt.

PYTHON ?= python3
PREFIX ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
BINDIR ?= $(EXEC_PREFIX)/bin
DATAROOTDIR ?= $(PREFIX)/share
DATADIR ?= $(DATAROOTDIR)
MANDIR ?= $(DATAROOTDIR)/man
DESTDIR ?=
# Flatpak reads triggers only from its own datadir (/usr/share/flatpak/triggers on
# distributions): with PREFIX=/usr/local, set DATADIR=/usr/share or TRIGGERSDIR.
TRIGGERSDIR ?= $(DATADIR)/flatpak/triggers
# Units go where systemd itself looks when installing into systemd's own prefix: pkg-config
# says, e.g. /lib/systemd/system on Debian 12 (the only place its dh_installsystemd enables
# units from), /usr/lib/systemd/system elsewhere. Any other PREFIX (/usr/local, a test
# prefix), or no pkg-config or systemd.pc: $(PREFIX)/lib/systemd/system.
SYSTEMD_PREFIX := $(shell pkg-config --variable=prefix systemd 2>/dev/null)
SYSTEMDUNITDIR ?= $(if $(filter $(PREFIX),$(SYSTEMD_PREFIX)),$\
	$(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null),$\
	$(PREFIX)/lib/systemd/system)
# Package manager hooks (hooks/, docs/reference.md#package-managers). Each package manager
# reads them from one fixed place, whatever PREFIX is; an empty directory variable skips
# that hook. A host without a given package manager just carries an unused file.
SYSCONFDIR ?= /etc
DPKGCONFDIR ?= $(SYSCONFDIR)/dpkg/dpkg.cfg.d
DNF5ACTIONSDIR ?= $(SYSCONFDIR)/dnf/libdnf5-plugins/actions.d
DNF4CONFDIR ?= $(SYSCONFDIR)/dnf/plugins
# dnf 4 imports plugins from <its Python's site directory>/dnf-plugins.
DNF4PLUGINDIR ?= $(PYTHONDIR)/dnf-plugins
ALPMHOOKDIR ?= /usr/share/libalpm/hooks
ZYPPCOMMITDIR ?= /usr/lib/zypp/plugins/commit
# The D-Bus interface (flatpak-sysext-dbus.service): its bus policy, its activation file
# and its polkit actions. The system bus and polkit read them only under /usr/share (and
# /etc): with PREFIX=/usr/local, set DATADIR=/usr/share, as for the trigger.
DBUSPOLICYDIR ?= $(DATADIR)/dbus-1/system.d
DBUSSERVICEDIR ?= $(DATADIR)/dbus-1/system-services
POLKITACTIONDIR ?= $(DATADIR)/polkit-1/actions
# The example config (every key with its default) is documentation, not a config file.
EXAMPLEDIR ?= $(DATADIR)/doc/flatpak-sysext/examples
# Where PYTHON looks for packages under PREFIX: the first of its own site directories
# under PREFIX/lib (Debian: /usr/lib/python3/dist-packages, or for /usr/local
# /usr/local/lib/python3.X/dist-packages), else posix_prefix's purelib
# (/usr/lib/python3.X/site-packages, as on Fedora and Arch). Used by install only.
PYTHONDIR ?= $(shell $(PYTHON) -I -c 'import sys, sysconfig; p = "$(PREFIX)"; \
	d = [x for x in sys.path if x.startswith(p + "/lib/") and x.endswith("-packages")]; \
	print(d[0] if d else sysconfig.get_path("purelib", "posix_prefix", {"base": p, "platbase": p}))')
PYTHON_EXE = $(shell $(PYTHON) -c 'import sys; print(sys.executable)')

VENV ?= .venv
VENV_MIN ?= .venv-min
# The oldest Python the package supports, where the machine has it (pyenv here does).
PYTHON_MIN ?= $(firstword $(foreach p,python3.9 $(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python3.9),\
	$(shell $(p) -c 'import venv' >/dev/null 2>&1 && echo $(p))) $(PYTHON))
VPY := $(VENV)/bin/python
# Debian 12's versions: the oldest a current LTS distribution ships
# (docs/reference.md#supported-versions); setuptools and wheel too, for tests/test_sdist.py.
MIN_DEPS := pyelftools==0.29 jsonschema==4.10.3 jeepney==0.8.0 setuptools==66.1.1 wheel==0.38.4

PYTEST_ARGS ?=
# Where `make deb` leaves the Debian package.
DEBDIR ?= dist

.PHONY: all deps venv test test-min lint demo bench clean \
	install install-package install-data install-hooks uninstall deb

all: venv

deps:
	@missing=""; \
	for pair in flatpak:flatpak bwrap:bubblewrap gcc:gcc strace:strace gpg:gnupg \
	    systemd-sysext:systemd; do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	$(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
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
	$(VPY) -m pip install -q --upgrade pip setuptools
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

# The same suite on the oldest supported Python, pyelftools, jsonschema and setuptools,
# but for the slow tests (fault injection, the booted host, package builds), whose
# outcome does not depend on those versions.
test-min: $(VENV_MIN)/.stamp
	$(VENV_MIN)/bin/python -m pytest -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check flatpak_sysext tests testsupport bench demo
	$(VENV)/bin/mypy

demo: deps venv
	$(VPY) demo/demo.py

# The figures of docs/performance.md: a few minutes, as root (bench/bench.py).
# Its last rows boot the Debian 12 of the tests (skipped without its tools); BENCH_ARGS=
# --booted-only runs only those: flatpak install to the daemon answering over D-Bus,
# flatpak uninstall to it gone, and what the package manager hooks add to a dpkg -i.
# BENCH_ARGS=--trigger-only runs only the trigger's rows (add --rounds N for more runs).
BENCH_ARGS ?=
bench: deps venv
	$(VPY) bench/bench.py $(BENCH_ARGS)

# `make install` = the Python package and its command (install-package) + the trigger,
# the units, the example config and the man page (install-data). Packagers who install
# the package with their own Python tooling (pybuild, %pyproject_install, installer)
# use install-data alone.
install: install-package install-data

# The package's folders, one per pipeline stage (docs/ARCHITECTURE.md).
PYTHON_SUBPACKAGES = flatpak rules state host

install-package:
	@test -n "$(PYTHONDIR)" || { echo "PYTHONDIR: $(PYTHON) did not tell its site directory"; exit 1; }
	install -d $(DESTDIR)$(PYTHONDIR)/flatpak_sysext/schemas $(DESTDIR)$(BINDIR)
	install -m 0644 flatpak_sysext/*.py $(DESTDIR)$(PYTHONDIR)/flatpak_sysext/
	for d in $(PYTHON_SUBPACKAGES); do \
	  install -d $(DESTDIR)$(PYTHONDIR)/flatpak_sysext/$$d && \
	  install -m 0644 flatpak_sysext/$$d/*.py $(DESTDIR)$(PYTHONDIR)/flatpak_sysext/$$d/ || exit 1; \
	done
	install -m 0644 flatpak_sysext/schemas/*.json $(DESTDIR)$(PYTHONDIR)/flatpak_sysext/schemas/
	printf '#!%s\nimport sys\n\nfrom flatpak_sysext.cli import main\n\nsys.exit(main())\n' \
	  '$(PYTHON_EXE)' > $(DESTDIR)$(BINDIR)/flatpak-sysext
	chmod 0755 $(DESTDIR)$(BINDIR)/flatpak-sysext

install-data:
	install -d $(DESTDIR)$(TRIGGERSDIR) $(DESTDIR)$(SYSTEMDUNITDIR) \
	  $(DESTDIR)$(EXAMPLEDIR) $(DESTDIR)$(MANDIR)/man8
	sed '1s|^#!/usr/bin/python3|#!$(PYTHON_EXE)|' triggers/flatpak-sysext.trigger \
	  > $(DESTDIR)$(TRIGGERSDIR)/flatpak-sysext.trigger
	chmod 0755 $(DESTDIR)$(TRIGGERSDIR)/flatpak-sysext.trigger
	sed 's|/usr/bin/flatpak-sysext|$(BINDIR)/flatpak-sysext|' systemd/flatpak-sysext.service \
	  > $(DESTDIR)$(SYSTEMDUNITDIR)/flatpak-sysext.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/flatpak-sysext.service
	install -m 0644 systemd/flatpak-sysext.path $(DESTDIR)$(SYSTEMDUNITDIR)/
	sed 's|/usr/bin/flatpak-sysext|$(BINDIR)/flatpak-sysext|' \
	  systemd/flatpak-sysext-dbus.service \
	  > $(DESTDIR)$(SYSTEMDUNITDIR)/flatpak-sysext-dbus.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/flatpak-sysext-dbus.service
	install -d $(DESTDIR)$(DBUSPOLICYDIR) $(DESTDIR)$(DBUSSERVICEDIR) \
	  $(DESTDIR)$(POLKITACTIONDIR)
	install -m 0644 dbus/org.flatpak.SystemExtensions1.conf $(DESTDIR)$(DBUSPOLICYDIR)/
	install -m 0644 dbus/org.flatpak.SystemExtensions1.service $(DESTDIR)$(DBUSSERVICEDIR)/
	install -m 0644 polkit/org.flatpak.systemextensions.policy $(DESTDIR)$(POLKITACTIONDIR)/
	install -m 0644 examples/config.json $(DESTDIR)$(EXAMPLEDIR)/config.json.example
	install -m 0644 docs/flatpak-sysext.8 $(DESTDIR)$(MANDIR)/man8/
	$(MAKE) --no-print-directory install-hooks

# Every hook with the command's path (and the zypper plugin's interpreter) substituted.
HOOK_SED = sed -e 's|/usr/bin/flatpak-sysext|$(BINDIR)/flatpak-sysext|' \
	-e '1s|^\#!/usr/bin/python3$$|\#!$(PYTHON_EXE)|'
install-hooks:
	@set -e; install_hook() { \
	  [ -n "$$1" ] || return 0; install -d "$(DESTDIR)$$1"; \
	  $(HOOK_SED) "hooks/$$2" > "$(DESTDIR)$$1/$${2##*/}"; chmod "$$3" "$(DESTDIR)$$1/$${2##*/}"; }; \
	install_hook '$(DPKGCONFDIR)' dpkg/flatpak-sysext 0644; \
	install_hook '$(DNF5ACTIONSDIR)' dnf5/flatpak-sysext.actions 0644; \
	install_hook '$(DNF4CONFDIR)' dnf4/flatpak_sysext.conf 0644; \
	install_hook '$(DNF4PLUGINDIR)' dnf4/flatpak_sysext.py 0644; \
	install_hook '$(ALPMHOOKDIR)' pacman/00-flatpak-sysext-pre.hook 0644; \
	install_hook '$(ALPMHOOKDIR)' pacman/zz-flatpak-sysext-post.hook 0644; \
	install_hook '$(ZYPPCOMMITDIR)' zypper/flatpak-sysext 0755

uninstall:
	rm -rf $(DESTDIR)$(PYTHONDIR)/flatpak_sysext
	rm -f $(DESTDIR)$(BINDIR)/flatpak-sysext \
	  $(DESTDIR)$(TRIGGERSDIR)/flatpak-sysext.trigger \
	  $(DESTDIR)$(SYSTEMDUNITDIR)/flatpak-sysext.service \
	  $(DESTDIR)$(SYSTEMDUNITDIR)/flatpak-sysext.path \
	  $(DESTDIR)$(SYSTEMDUNITDIR)/flatpak-sysext-dbus.service \
	  $(DESTDIR)$(DBUSPOLICYDIR)/org.flatpak.SystemExtensions1.conf \
	  $(DESTDIR)$(DBUSSERVICEDIR)/org.flatpak.SystemExtensions1.service \
	  $(DESTDIR)$(POLKITACTIONDIR)/org.flatpak.systemextensions.policy \
	  $(DESTDIR)$(EXAMPLEDIR)/config.json.example \
	  $(DESTDIR)$(MANDIR)/man8/flatpak-sysext.8
	rmdir $(DESTDIR)$(EXAMPLEDIR) $(DESTDIR)$(DATADIR)/doc/flatpak-sysext 2>/dev/null || true
	@for f in '$(DPKGCONFDIR)/flatpak-sysext' '$(DNF5ACTIONSDIR)/flatpak-sysext.actions' \
	    '$(DNF4CONFDIR)/flatpak_sysext.conf' '$(DNF4PLUGINDIR)/flatpak_sysext.py' \
	    '$(ALPMHOOKDIR)/00-flatpak-sysext-pre.hook' '$(ALPMHOOKDIR)/zz-flatpak-sysext-post.hook' \
	    '$(ZYPPCOMMITDIR)/flatpak-sysext'; do \
	  case "$$f" in /*) rm -f "$(DESTDIR)$$f";; esac; done

# The Debian package, built from the sdist with packaging/debian (packaging/build-deb.sh).
deb:
	packaging/build-deb.sh $(DEBDIR)

clean:
	rm -rf $(VENV) $(VENV_MIN) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache \
	  .hypothesis
