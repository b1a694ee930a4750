#!/usr/bin/env bash
# Installs `kubernetes-validate` (PyPI) into a private virtual environment for the Kubernetes
# manifest tests (tests/e2e/k8s.rs): never into the system's Python. Usage:
#   bash .ci/k8s-validate-setup.sh [VENV]      (default: target/k8s-validate)
# On success prints the path of its `kubernetes-validate` on stdout; otherwise says why on
# stderr and exits 1, and the tests that need it say SKIPPED with that reason.
# An environment already set up is used as it is: delete VENV to get the newest release.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-target/k8s-validate}
say() { echo "k8s-validate-setup: $*" >&2; }

mkdir -p "$(dirname "$venv")"
# Two test runs at once would install into the same directory.
exec 9>"$venv.lock"
flock 9

cli=$venv/bin/kubernetes-validate
if [[ -x $cli ]] && "$cli" --version >/dev/null 2>&1; then
    echo "$(cd "$(dirname "$cli")" && pwd)/kubernetes-validate"
    exit 0
fi
if ! command -v python3 >/dev/null; then
    say "no python3 on PATH"
    exit 1
fi
rm -rf "$venv"
if ! python3 -m venv "$venv" >"$venv.log" 2>&1; then
    say "python3 cannot make a virtual environment ($(tail -n 1 "$venv.log")); Debian: apt-get install python3-venv"
    rm -rf "$venv"
    exit 1
fi
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate >>"$venv.log" 2>&1; then
    say "pip cannot install kubernetes-validate from PyPI ($(grep -m1 -iE 'error' "$venv.log" || tail -n 1 "$venv.log"))"
    rm -rf "$venv"
    exit 1
fi
say "installed kubernetes-validate $("$cli" --version) into $venv"
echo "$(cd "$(dirname "$cli")" && pwd)/kubernetes-validate"
