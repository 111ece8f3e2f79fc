#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
#
# Build the Debian package from this tree as Debian would: from the sdist (the upstream
# tarball), with packaging/debian as debian/, by `dpkg-buildpackage -b -us -uc`, in a
# temporary directory. The .deb lands in OUTDIR. Needs dpkg-dev and the Build-Depends of
# packaging/debian/control; DEB_BUILD_OPTIONS (e.g. nocheck) is passed on.
# Usage: packaging/build-deb.sh OUTDIR
set -eu
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
# Debian's own interpreter and setuptools: the ones the package is built with.
python=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The sdist, from a copy of the tree: building it writes an egg-info into the sources.
mkdir "$work/tree" "$work/build"
tar -C "$top" --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$work/tree" -xf -
sdist=$(cd "$work/tree" && "$python" -c \
    'import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))' "$work" \
    | tail -n 1)
tar -C "$work/build" -xzf "$work/$sdist"
src=$(echo "$work"/build/*)
cp -r "$src/packaging/debian" "$src/debian"

# As on a buildd, whatever machine this runs on: the distribution's own tools and Python
# first in PATH (not a pyenv or a venv), and not in our CI's strict mode (a build runs
# the tests that need no privilege, and may lack tools the strict mode demands).
(cd "$src" && env -u CI -u FLATPAK_SYSEXT_TEST_STRICT PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    dpkg-buildpackage -b -us -uc)
cp "$work"/build/*.deb "$out"/
ls "$work"/build/*.deb | sed 's|.*/||'
