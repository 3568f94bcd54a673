#!/usr/bin/env bash
# Set up (first run only) and start the web UI on the default model (it prints the URL; Ctrl-C stops).
set -euo pipefail
source "$(dirname "$0")/scripts/bootstrap.sh"
exec r1 ui "$@"
