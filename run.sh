#!/usr/bin/env bash
# Set up (first run only) and start the chat on the default model.
set -euo pipefail
source "$(dirname "$0")/scripts/bootstrap.sh"
exec r1 chat "$@"
