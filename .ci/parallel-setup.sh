#!/bin/sh
# Installs GNU parallel from Debian's package `parallel` for the differential test against it
# (tests/e2e/parallel_diff.rs), unless it is there already (the `parallel` of moreutils is
# another program and does not count). Exits 1 saying why when it cannot; the test then
# prints SKIPPED with that reason.
set -eu
if parallel --version 2>/dev/null | grep -q "GNU parallel"; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "parallel-setup: no apt-get here; install GNU parallel by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q parallel >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null 2>&1 || true
    $SUDO apt-get install -y -q parallel >/dev/null
fi
parallel --version | head -n 1
