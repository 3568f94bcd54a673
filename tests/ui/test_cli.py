"""The `r1` command as a user runs it: help, chat over stdin, clear errors."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest


def run_r1(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ui.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_the_commands():
    out = run_r1("--help")
    assert out.returncode == 0
    assert all(command in out.stdout for command in ("generate", "chat", "ui", "serve"))


@pytest.mark.parametrize("command", ["ui", "serve"])
def test_front_end_help_names_the_listening_flags(command):
    out = run_r1(command, "--help")
    assert out.returncode == 0
    assert "--host" in out.stdout and "--port" in out.stdout and "--model" in out.stdout


@pytest.mark.parametrize("command", ["ui", "serve"])
def test_port_in_use_is_a_one_line_error(command, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = run_r1(command, "--port", str(port), env={"R1_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert out.stderr.strip() == f"r1: error: port {port} on 127.0.0.1 is already in use; choose another with --port"


@pytest.mark.parametrize("command", ["ui", "serve"])
def test_front_end_with_missing_model_is_a_clear_error(command, tmp_path):
    with socket.socket() as probe:  # a port that is free right now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = run_r1(
        command,
        "--port",
        str(port),
        "--model",
        str(tmp_path / "nope.gguf"),
        env={"R1_CACHE_DIR": str(tmp_path), "R1_DATA_DIR": str(tmp_path)},
    )
    assert out.returncode == 2
    assert "not found" in out.stderr and "nope.gguf" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("key", ["", " "])
def test_serve_refuses_an_empty_api_key_before_loading(key, tmp_path):
    out = run_r1(
        "serve",
        "--api-key",
        key,
        "--model",
        str(tmp_path / "never-loaded.gguf"),
        env={"R1_CACHE_DIR": str(tmp_path), "R1_DATA_DIR": str(tmp_path)},
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "r1: error: --api-key is empty: give a key, or leave the flag out to serve without one"


def test_allowed_host_flags_reach_the_settings():
    from ui.cli import _settings, build_parser

    args = build_parser().parse_args(
        ["serve", "--allowed-host", "r1.lan", "--allowed-host", "box", "--max-request-mb", "2"]
    )
    settings = _settings(args)
    assert settings.allowed_hosts == ("r1.lan", "box") and settings.max_request_mb == 2.0
    assert _settings(build_parser().parse_args(["ui"])).allowed_hosts == ()


def test_quant_flag_lists_the_choices():
    out = run_r1("generate", "--prompt", "hi", "--quant", "int3")
    assert out.returncode == 2
    assert "'auto', 'fp32', 'int8', 'int4'" in out.stderr


def test_missing_model_file_is_a_clear_error(tmp_path):
    out = run_r1(
        "generate", "--prompt", "hi", "--model", str(tmp_path / "nope.gguf"), env={"R1_CACHE_DIR": str(tmp_path)}
    )
    assert out.returncode == 2
    assert "not found" in out.stderr and "nope.gguf" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_env_setting_is_a_clear_error(tmp_path):
    out = run_r1("generate", "--prompt", "hi", env={"R1_THREADS": "many"})
    assert out.returncode == 2
    assert "R1_THREADS='many'" in out.stderr


def test_quantize_names_its_flags_and_refuses_a_gguf_with_the_way_forward(tmp_path):
    out = run_r1("quantize", "--help")
    assert out.returncode == 0
    assert all(flag in out.stdout for flag in ("--method", "--bits", "--group-size", "--act-order", "--calib", "--out"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = run_r1("quantize", str(gguf), "--out", str(tmp_path / "out"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not an HF checkpoint directory" in out.stderr and "r1 export --format safetensors" in out.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["cold", "warm"])  # a warm start never imports transformers or gguf
def test_chat_over_stdin_answers_and_exits(tmp_path_factory, cache):
    cache_dir = tmp_path_factory.getbasetemp() / "chat-cache"
    out = run_r1(
        "chat",
        "--max-new-tokens",
        "24",
        stdin="What is the capital of France? Answer in one word.\n/reset\n/exit\n",
        env={"R1_CACHE_DIR": str(cache_dir), "R1_DATA_DIR": str(tmp_path_factory.mktemp("chat-data"))},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("r1> ") and "Paris" in out.stdout
    assert "(history cleared: conversation 2)" in out.stderr  # /reset starts a new stored conversation


def test_r1_bench_runs_a_benchmark_script_with_its_own_flags():
    done = subprocess.run(
        [sys.executable, "-m", "ui.cli", "bench", "serving", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "--skip-llamacpp" in done.stdout
    support = subprocess.run(
        [sys.executable, "-m", "ui.cli", "bench", "support", "--help"], capture_output=True, text=True, timeout=120
    )
    assert support.returncode == 0 and "--user-model" in support.stdout
    r1_arch = subprocess.run(
        [sys.executable, "-m", "ui.cli", "bench", "r1_arch", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r1_arch.returncode == 0 and "--long-context" in r1_arch.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "ui.cli", "bench", "nope"], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


TOOL_QUESTIONS = [
    "What is 12 times 7?",
    "What is the derivative of x**3 * sin(x)?",
    "Solve x**2 - 5*x + 6 = 0",
    "Write a Python function that reverses a string",
]


@pytest.fixture(scope="module")
def piped_tool_chat(tmp_path_factory) -> tuple[list[str], str]:
    """The web chat's four tool questions piped into one `r1 chat`: (the four replies on stdout, stderr)."""
    out = run_r1(
        "chat",
        stdin="\n".join(TOOL_QUESTIONS) + "\n",
        env={
            "R1_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "chat-cache"),
            "R1_DATA_DIR": str(tmp_path_factory.mktemp("chat-tools-data")),
        },
    )
    assert out.returncode == 0, out.stderr
    replies = [reply.strip() for reply in out.stdout.split("r1> ")[1:]]
    assert len(replies) == 4, out.stdout
    return replies, out.stderr


@pytest.mark.slow
def test_chat_over_stdin_answers_maths_and_code_through_the_tools(piped_tool_chat):
    replies, stderr = piped_tool_chat
    assert replies[0] == "84"
    assert replies[1] == "x**3*cos(x) + 3*x**2*sin(x)"  # plain sympy text
    assert (
        replies[3].startswith("```python\ndef ")
        and "Ran in the sandbox: `reverse_string('hello')` → `'olleh'`" in replies[3]
    )
    for tool in ("math_simplify", "math_diff", "python_exec"):  # which tool answered each, on stderr
        assert f"[verified, with {tool};" in stderr, stderr
    assert "[tool math_diff: Diff: " in stderr  # a tool call as the search ran it


@pytest.mark.slow
def test_chat_over_stdin_gives_the_whole_solution_set(piped_tool_chat):
    replies, stderr = piped_tool_chat
    assert "[verified, with math_solve;" in stderr
    assert set(re.findall(r"-?\d+", replies[2])) == {"2", "3"}, replies[2]
