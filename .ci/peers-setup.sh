#!/bin/sh
# Installs the other programs the tests and the benchmark compare bulkhead with, each named
# as an argument: `parallel` (GNU parallel, Debian's package: the oracle of
# tests/e2e/parallel_diff.rs and a peer of the shell section; the `parallel` of moreutils is
# another program and does not count), `rg` (Debian's ripgrep, the scan section's peer) and
# `rust-parallel` (from crates.io into target/bench-tools, the shell section's third peer).
# CI (.ci/run) and the differential test ask for `parallel`; the benchmark for all three.
# What is there already is left alone. Exits 1 saying why when one cannot be had; its caller
# then says SKIPPED with that reason.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS="${CARGO_TARGET_DIR:-$HERE/../target}/bench-tools"
packages=""
failed=0
for peer in "$@"; do
    case "$peer" in
    parallel)
        parallel --version 2>/dev/null | grep -q "GNU parallel" || packages="$packages parallel"
        ;;
    rg)
        command -v rg >/dev/null 2>&1 || packages="$packages ripgrep"
        ;;
    rust-parallel)
        if ! command -v rust-parallel >/dev/null 2>&1 && [ ! -x "$TOOLS/bin/rust-parallel" ]; then
            # Built in a directory of its own (not this repository's target/), installed into it.
            env -u CARGO_TARGET_DIR cargo install --quiet --locked rust-parallel --root "$TOOLS" || {
                echo "peers-setup: cargo install rust-parallel failed" >&2
                failed=1
            }
        fi
        ;;
    *)
        echo "peers-setup: unknown peer '$peer' (parallel, rg or rust-parallel)" >&2
        exit 2
        ;;
    esac
done
if [ -n "$packages" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "peers-setup: no apt-get here; install$packages by hand" >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        SUDO="sudo -n"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # one word per package
    if ! $SUDO apt-get install -y -q $packages >/dev/null 2>&1; then
        $SUDO apt-get update -q >/dev/null 2>&1 || true
        $SUDO apt-get install -y -q $packages >/dev/null || {
            echo "peers-setup: apt-get could not install$packages" >&2
            exit 1
        }
    fi
fi
exit "$failed"
