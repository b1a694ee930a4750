#!/bin/sh
# Installs what the benchmark's peers need and a machine may lack, from Debian's packages:
# GNU parallel (the `parallel` of moreutils is another program and does not count) and
# ripgrep (`rg`, the scan section's peer). Called by the suite when either is missing; the
# suite skips a peer that this could not install.
set -eu
if parallel --version 2>/dev/null | grep -q "GNU parallel" && command -v rg >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: no apt-get here; install GNU parallel by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q parallel ripgrep >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null 2>&1 || true
    $SUDO apt-get install -y -q parallel ripgrep >/dev/null
fi
parallel --version | head -n 1
rg --version | head -n 1
