"""llama.cpp's own `llama-server` and `llama-bench`, built once from the source vendored in llama-cpp-python's sdist.

The serving benchmark's anchor is llama.cpp's C++ server (continuous batching over `--parallel` slots), not
llama-cpp-python's Python server, which runs one request at a time. Both binaries come from the llama.cpp that
llama-cpp-python `LLAMA_CPP_PYTHON_VERSION` vendors, so the engine is the same one the tests compare against.

`ensure_binaries()` downloads the sdist with pip (`--no-binary :all: --no-deps`), configures CMake and builds the
two targets into `<cache>/llama.cpp-<version>/<options hash>/`, then reuses them on later runs. A failure (no
compiler, no cmake, no network) comes back as a one-line reason, never an exception.

Why not -march=native: on CPUs with AMX (Sapphire Rapids and later) llama.cpp 0.3.36's AMX path segfaults in the
batched Q4_1 matmul of any multi-token prompt (tests/servers.py `llama_cpp_ubatch`). The build therefore turns
GGML_NATIVE off and names the CPU's AVX/AVX2/AVX-512/VNNI/F16C/FMA/BMI2 features one by one, with AMX off, so
prefill runs at llama.cpp's normal micro-batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
TARGETS = ("llama-server", "llama-bench")

# /proc/cpuinfo flag -> the GGML option that compiles for it. AMX is absent on purpose (module docstring).
CPU_FEATURES = {
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "bmi2": "GGML_BMI2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "avx_vnni": "GGML_AVX_VNNI",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
}

# Everything but the two targets off: no tests, examples, web UI download, HTTPS or shared libraries.
BASE_OPTIONS = {
    "CMAKE_BUILD_TYPE": "Release",
    "BUILD_SHARED_LIBS": "OFF",
    "GGML_NATIVE": "OFF",
    "GGML_AMX_TILE": "OFF",
    "GGML_AMX_INT8": "OFF",
    "GGML_AMX_BF16": "OFF",
    "LLAMA_BUILD_TESTS": "OFF",
    "LLAMA_BUILD_EXAMPLES": "OFF",
    "LLAMA_BUILD_TOOLS": "ON",
    "LLAMA_BUILD_SERVER": "ON",
    "LLAMA_BUILD_APP": "OFF",
    "LLAMA_BUILD_UI": "OFF",
    "LLAMA_USE_PREBUILT_UI": "OFF",
    "LLAMA_OPENSSL": "OFF",
}


@dataclass(frozen=True)
class Binaries:
    server: Path
    bench: Path
    options: dict[str, str]  # the CMake options they were built with


def cmake_options(cpu_flags: set[str]) -> dict[str, str]:
    """The CMake -D options for a CPU with these /proc/cpuinfo flags: every known x86 feature it has, AMX off."""
    features = {option: "ON" if flag in cpu_flags else "OFF" for flag, option in CPU_FEATURES.items()}
    return {**BASE_OPTIONS, **features}


def configure_command(source: Path, build: Path, options: dict[str, str]) -> list[str]:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    return ["cmake", "-S", str(source), "-B", str(build), *generator] + [f"-D{k}={v}" for k, v in options.items()]


def build_command(build: Path, jobs: int) -> list[str]:
    return ["cmake", "--build", str(build), "--target", *TARGETS, "-j", str(jobs)]


def options_key(options: dict[str, str]) -> str:
    """A short hash naming one set of build options (binaries for another CPU live beside, not over, these)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]


def read_cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cache_root() -> Path:
    """`$R1_CACHE_DIR`, else `~/.cache/r1-reasoner` (the weight cache's directory)."""
    env = os.environ.get("R1_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "r1-reasoner"


def ensure_binaries(jobs: int = 2, cache: Path | None = None) -> Binaries | str:
    """Built (or cached) llama-server and llama-bench, or one line saying why they could not be built.

    Side effect: the first call downloads the sdist (~75 MB) and compiles for minutes; the binaries land in
    `<cache>/llama.cpp-<version>/<options hash>/bin/`, written by a build in a temp directory and then renamed
    into place, so a killed build leaves nothing half-made to reuse.
    """
    options = cmake_options(read_cpu_flags())
    home = (cache or cache_root()) / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"
    final = home / options_key(options)
    binaries = Binaries(final / "bin" / "llama-server", final / "bin" / "llama-bench", options)
    if binaries.server.exists() and binaries.bench.exists():
        return binaries
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH, cannot build llama.cpp"
    home.mkdir(parents=True, exist_ok=True)
    print(
        f"building llama.cpp {LLAMA_CPP_PYTHON_VERSION} (llama-server, llama-bench) into {final}, takes minutes...",
        file=sys.stderr,
        flush=True,
    )
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=home, prefix=".build-") as tmp:
        work = Path(tmp)
        why = _download_and_build(work, options, jobs)
        if why:
            return why
        (work / "out" / "bin").mkdir(parents=True)
        for target in TARGETS:
            shutil.copy2(work / "build" / "bin" / target, work / "out" / "bin" / target)
        (work / "out" / "options.json").write_text(json.dumps(options, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work / "out", final)
    print(f"built llama.cpp in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return binaries


def _download_and_build(work: Path, options: dict[str, str], jobs: int) -> str | None:
    """Fetch and unpack the sdist under `work`, then configure and build; None, or why it failed."""
    spec = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
    pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-d", str(work), spec]
    why = _run(pip, "pip download")
    if why:
        return why
    sdists = list(work.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        return f"pip download of {spec} gave no sdist"
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(work, filter="data")
    source = work / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").exists():
        return f"no vendored llama.cpp in the sdist (looked for {source.relative_to(work)})"
    build = work / "build"
    return _run(configure_command(source, build, options), "cmake configure") or _run(
        build_command(build, jobs), "cmake build"
    )


def _run(command: list[str], what: str) -> str | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        return f"{what} failed: {e}"
    if proc.returncode == 0:
        return None
    tail = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()][-2:]
    return f"{what} failed (exit {proc.returncode}): " + " | ".join(tail)


# ----- running them ---------------------------------------------------------------------------------


def server_command(
    binary: Path,
    gguf: Path,
    *,
    port: int,
    threads: int,
    parallel: int,
    ctx_per_slot: int,
    ubatch: int | None = None,
) -> list[str]:
    """llama-server on 127.0.0.1 with `parallel` continuously batched slots of `ctx_per_slot` tokens each.

    The context is split evenly between slots (-c is their sum). `ubatch` None keeps llama.cpp's default.
    """
    command = [str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--threads", str(threads), "--threads-batch", str(threads)]
    command += ["--parallel", str(parallel), "--cont-batching", "--ctx-size", str(parallel * ctx_per_slot)]
    command += ["--no-webui"] + (["--ubatch-size", str(ubatch)] if ubatch is not None else [])
    return command


def bench_command(
    binary: Path, gguf: Path, *, threads: int, tokens: int, repetitions: int, ubatch: int | None = None
) -> list[str]:
    """llama-bench's pp<tokens> and tg<tokens> tests, JSON on stdout."""
    command = [str(binary), "--model", str(gguf), "--threads", str(threads)]
    command += [
        "--n-prompt",
        str(tokens),
        "--n-gen",
        str(tokens),
        "--repetitions",
        str(repetitions),
        "--output",
        "json",
    ]
    return command + (["--ubatch-size", str(ubatch)] if ubatch is not None else [])


def parse_llama_bench(stdout: str) -> dict[str, float]:
    """llama-bench's `--output json` as {test name: mean tok/s}: "pp128" for a prompt-only test, "tg128" for
    a generation-only one, "pp128+tg64" for both (llama-bench's own names)."""
    try:
        tests = json.loads(stdout)
    except json.JSONDecodeError as e:
        raise ValueError(f"llama-bench output is not JSON: {e}: {stdout[:200]!r}") from e
    speeds = {}
    for test in tests:
        n_prompt, n_gen = int(test["n_prompt"]), int(test["n_gen"])
        parts = ([f"pp{n_prompt}"] if n_prompt else []) + ([f"tg{n_gen}"] if n_gen else [])
        speeds["+".join(parts)] = float(test["avg_ts"])
    return speeds


if __name__ == "__main__":
    result = ensure_binaries()
    print(result if isinstance(result, str) else f"{result.server}\n{result.bench}")
    sys.exit(1 if isinstance(result, str) else 0)
