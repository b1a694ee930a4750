#!/bin/sh
# Installs what the benchmark's peers need and a machine may lack, from Debian's packages:
# GNU parallel (the `parallel` of moreutils is another program and does not count) and
# ripgrep (`rg`, the scan section's peer); and rust-parallel from crates.io. Called by the
# suite when one is missing; the suite skips a peer that this could not install.
set -eu
# rust-parallel, the shell section's third peer, from crates.io into target/bench-tools (the
# suite looks there, on the PATH and in ~/.cargo/bin); a failure only makes the suite skip it.
HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS="${CARGO_TARGET_DIR:-$HERE/../../target}/bench-tools"
if ! command -v rust-parallel >/dev/null 2>&1 && [ ! -x "$TOOLS/bin/rust-parallel" ]; then
    cargo install --quiet --locked rust-parallel --root "$TOOLS" \
        || echo "setup: cargo install rust-parallel failed; the shell section skips it" >&2
fi
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
