#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite, slow end-to-end tests included.
# pytest's exit 5 ("no tests collected") is a failure here, not a pass.
set -uo pipefail
R1_NEED_BROWSER=1 source "$(dirname "$0")/scripts/bootstrap.sh"
cd "$ROOT"
# Lint and format check first: a finding fails the run before the (long) suite starts.
ruff check . && ruff format --check . || { echo "test.sh: ruff found problems (ruff check --fix . && ruff format . fixes most)" >&2; exit 1; }
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; treating as failure" >&2
    exit 1
fi
exit "$rc"
