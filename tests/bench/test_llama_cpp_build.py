"""The pure parts of bench/llama_cpp_build.py: build options, commands, llama-bench's output, the cache look-up.
Nothing here builds or runs llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import llama_cpp_build as lcb

SAPPHIRE_RAPIDS = {"avx", "avx2", "bmi2", "fma", "f16c", "avx_vnni", "avx512f", "avx512vbmi", "avx512_vnni"}
SAPPHIRE_RAPIDS |= {"avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}


def test_options_name_each_cpu_feature_and_never_amx():
    options = lcb.cmake_options(SAPPHIRE_RAPIDS)
    assert options["GGML_NATIVE"] == "OFF"  # -march=native would switch AMX back on
    assert all(options[f"GGML_AMX_{kind}"] == "OFF" for kind in ("TILE", "INT8", "BF16"))
    assert all(options[name] == "ON" for name in lcb.CPU_FEATURES.values())

    avx2_only = lcb.cmake_options({"avx", "avx2", "fma", "f16c", "bmi2"})
    assert avx2_only["GGML_AVX2"] == "ON" and avx2_only["GGML_AVX512"] == "OFF"
    assert avx2_only["GGML_AVX512_VNNI"] == "OFF" and avx2_only["GGML_AVX_VNNI"] == "OFF"
    assert lcb.options_key(avx2_only) != lcb.options_key(options)  # each CPU's binaries in their own directory
    assert lcb.options_key(dict(reversed(list(options.items())))) == lcb.options_key(options)


def test_build_commands():
    options = lcb.cmake_options({"avx2"})
    configure = lcb.configure_command(Path("/src"), Path("/b"), options)
    assert configure[:5] == ["cmake", "-S", "/src", "-B", "/b"]
    assert "-DGGML_NATIVE=OFF" in configure and "-DLLAMA_USE_PREBUILT_UI=OFF" in configure  # no download at build
    assert "-DGGML_AVX2=ON" in configure and "-DGGML_AVX512=OFF" in configure
    assert lcb.build_command(Path("/b"), 2) == [
        "cmake", "--build", "/b", "--target", "llama-server", "llama-bench", "-j", "2",
    ]  # fmt: skip


def test_server_command_splits_the_context_between_slots():
    command = lcb.server_command(
        Path("/bin/llama-server"), Path("/m.gguf"), port=8123, threads=2, parallel=16, ctx_per_slot=256
    )
    flags = {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag.startswith("--")}
    assert flags["--ctx-size"] == "4096" and flags["--parallel"] == "16" and "--cont-batching" in command
    assert flags["--threads"] == flags["--threads-batch"] == "2" and flags["--host"] == "127.0.0.1"
    assert "--ubatch-size" not in command
    ubatch1 = lcb.server_command(Path("s"), Path("m"), port=1, threads=1, parallel=1, ctx_per_slot=8, ubatch=1)
    assert ubatch1[-2:] == ["--ubatch-size", "1"]


def test_bench_command():
    command = lcb.bench_command(Path("/bin/llama-bench"), Path("/m.gguf"), threads=2, tokens=128, repetitions=3)
    assert command[0] == "/bin/llama-bench" and command[command.index("--output") + 1] == "json"
    assert command[command.index("--n-prompt") + 1] == command[command.index("--n-gen") + 1] == "128"


def test_parse_llama_bench_names_tests_as_llama_bench_does():
    # Abridged `llama-bench -o json` output: one object per test, with its mean and spread in tokens per second.
    out = json.dumps(
        [
            {
                "model_type": "llama ?B Q4_1",
                "n_threads": 2,
                "n_prompt": 128,
                "n_gen": 0,
                "avg_ts": 812.5,
                "stddev_ts": 9.1,
            },
            {
                "model_type": "llama ?B Q4_1",
                "n_threads": 2,
                "n_prompt": 0,
                "n_gen": 128,
                "avg_ts": 97.25,
                "stddev_ts": 1.2,
            },
            {
                "model_type": "llama ?B Q4_1",
                "n_threads": 2,
                "n_prompt": 16,
                "n_gen": 8,
                "avg_ts": 50.0,
                "stddev_ts": 0.5,
            },
        ]
    )
    assert lcb.parse_llama_bench(out) == {"pp128": 812.5, "tg128": 97.25, "pp16+tg8": 50.0}
    with pytest.raises(ValueError, match="not JSON"):
        lcb.parse_llama_bench("main: error: failed to load model")


def test_cached_binaries_are_reused_without_building(tmp_path, monkeypatch):
    monkeypatch.setattr(lcb, "read_cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(lcb, "_download_and_build", lambda *a: pytest.fail("built although cached"))
    home = tmp_path / f"llama.cpp-{lcb.LLAMA_CPP_PYTHON_VERSION}" / lcb.options_key(lcb.cmake_options({"avx2"}))
    (home / "bin").mkdir(parents=True)
    for name in lcb.TARGETS:
        (home / "bin" / name).write_text("")
    binaries = lcb.ensure_binaries(cache=tmp_path)
    assert binaries.server == home / "bin" / "llama-server" and binaries.bench == home / "bin" / "llama-bench"


def test_a_missing_tool_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(lcb.shutil, "which", lambda name: None if name == "cmake" else f"/usr/bin/{name}")
    why = lcb.ensure_binaries(cache=tmp_path)
    assert isinstance(why, str) and "cmake" in why and "\n" not in why
