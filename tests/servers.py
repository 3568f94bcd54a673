"""Real OpenAI-compatible servers for tests: our API in a thread of the test process, or a server process
(`r1 serve`, llama-cpp-python's) started on a free loopback port and stopped afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving `app` on a free loopback port, in a thread of this process."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class ServerProcess:
    """A server command run until the block ends; ready once GET <url>/v1/models answers 200."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        ready_timeout: float = 300.0,
    ) -> None:
        self.name = name
        self.command = command
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL, cwd=ROOT
        )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                self._stop()
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"{self.name} did not answer within {self.ready_timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def r1_serve(
    log_dir: Path, *, data_dir: Path, cache_dir: Path | None = None, quant: str = "int4", threads: int = 1
) -> ServerProcess:
    """`r1 serve` on the default model, as a user starts it (the weight cache: `cache_dir`, else the default)."""
    port = free_port()
    command = [sys.executable, "-m", "ui.cli", "serve", "--port", str(port), "--quant", quant]
    command += ["--threads", str(threads)] + (["--cache-dir", str(cache_dir)] if cache_dir is not None else [])
    return ServerProcess("r1 serve", command, port, log_dir / "r1-serve.log", env={"R1_DATA_DIR": str(data_dir)})


def llama_cpp_server(log_dir: Path, gguf: Path, *, threads: int = 1) -> ServerProcess:
    """llama-cpp-python's OpenAI-compatible server on `gguf`, its model listed as "default"."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        "default",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        "--n_threads",
        str(threads),
        "--verbose",
        "False",
        *_llama_cpp_batch_flags(),
    ]
    return ServerProcess("llama-cpp-python server", command, port, log_dir / "llama-cpp-server.log")


def _llama_cpp_batch_flags() -> list[str]:
    return ["--n_ubatch", "1"] if llama_cpp_ubatch() == 1 else []


def llama_cpp_ubatch() -> int:
    """llama.cpp's physical batch: 1 on CPUs with AMX (Sapphire Rapids and later), where llama-cpp-python 0.3.36
    built with -march=native segfaults in the batched Q4_1 matmul of any multi-token prompt (seen 2026-12-07;
    one-token batches run). It slows llama.cpp's prefill (one token per batch), not its decode or its tokens."""
    try:
        return 1 if "amx_int8" in Path("/proc/cpuinfo").read_text() else 512
    except OSError:
        return 512
