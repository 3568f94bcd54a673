"""The warm sympy worker process: `_worker_main` (inside it) and `MathWorker` (the caller's handle)."""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from tools.math.checks import DEFAULT_TIMEOUT_S, MAX_RESULT_CHARS, MathToolError, capped_error, check_timeout

DEFAULT_MEMORY_MB = 1024
# A sum of a few thousand terms is a left-deep chain that sympy parses and walks recursively
# (our own depth limit stays MAX_NESTING); the worker is a process of its own with the main
# thread's full stack.
_WORKER_RECURSION_LIMIT = 20_000
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _worker_main(memory_mb: int) -> None:
    """Serve requests, one JSON line each, on stdin/stdout until stdin closes.

    Request: {"id": int, "op": str, "args": dict, "timeout_s": float}. Reply: {"id": <the
    request's>, "result": ...} or {"id": ..., "error": str, "fatal": bool}; the parent drops
    a reply whose id is not the one it waits for, and replaces the worker after a fatal error.
    """
    import resource
    import signal

    import sympy

    from tools.math.sympy_ops import _OPS, _parse

    # Keep the real stdout for replies; anything sympy prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent
    sys.set_int_max_str_digits(MAX_RESULT_CHARS)
    sys.setrecursionlimit(_WORKER_RECURSION_LIMIT)
    # Import sympy's lazily loaded parts now, so the first real call is not slow.
    x = sympy.Symbol("x")
    sympy.simplify(sympy.sin(x) ** 2 + sympy.cos(x) ** 2)
    sympy.solve([x**2 - 1], [x], dict=True)
    sympy.integrate(x * sympy.exp(x), x), sympy.limit(sympy.sin(x) / x, x, 0), sympy.series(sympy.exp(x), x)
    _parse("x**2 + 1")
    # memory_mb is headroom over the warmed-up interpreter, whose own size varies with the
    # platform (thread stacks, optional gmpy2), so a small budget cannot starve start-up.
    limit_bytes = _address_space_bytes() + memory_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    _reply(replies, {"ready": True})

    for line in sys.stdin:
        request = json.loads(line)
        # Backstop if the parent is gone: SIGALRM's default action ends the process even
        # inside a long C-level computation (no Python handler is installed).
        signal.setitimer(signal.ITIMER_REAL, float(request["timeout_s"]) + 1.0)
        fatal = False
        try:
            result = _OPS[request["op"]](**request["args"])
            reply = {"result": result}
            if len(json.dumps(result)) > MAX_RESULT_CHARS:
                reply = {"error": f"result too long (> {MAX_RESULT_CHARS} chars)"}
        except MathToolError as e:
            reply = {"error": str(e)}
        except MemoryError:
            reply, fatal = {"error": f"memory limit exceeded ({memory_mb} MB)"}, True
        except RecursionError:
            reply = {"error": "expression too deeply nested"}
        except Exception as e:  # sympy's own failures are the user's answer, not a crash
            reply = {"error": capped_error(f"{type(e).__name__}: {e}")}
        signal.setitimer(signal.ITIMER_REAL, 0)
        reply["id"] = request["id"]
        reply["fatal"] = fatal
        _reply(replies, reply)
        if fatal:
            return


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _reply(stream, message: dict) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


# Makes `tools` and `tools.math` bare packages (their __path__ only) and imports this
# module, so the worker never runs the package's __init__ (pydantic, langchain) or
# anything else of the parent; -P keeps the cwd off sys.path.
_WORKER_BOOT = (
    "import sys, types\n"
    "for name, path in (('tools', sys.argv[1]), ('tools.math', sys.argv[2])):\n"
    "    package = types.ModuleType(name)\n"
    "    package.__path__ = [path]\n"
    "    sys.modules[name] = package\n"
    "from tools.math.worker import _worker_main\n"
    "_worker_main(int(sys.argv[3]))\n"
)


# ---------------------------------------------------------------------------
# Parent side: the warm worker process
# ---------------------------------------------------------------------------


class MathWorker:
    """A warm sympy process that runs one request at a time under time and memory limits.

    A fresh Python interpreter (not a fork of this possibly huge process) imports only
    this file and sympy, then answers JSON requests over pipes. A request that runs past
    its timeout gets the process killed and a replacement started at once; a dead worker
    is replaced on the next call. Thread-safe: calls are serialised by a lock, so time
    spent waiting for another thread's call is not part of a call's timeout.
    """

    def __init__(self, *, memory_mb: int = DEFAULT_MEMORY_MB, startup_timeout_s: float = 60.0):
        """`memory_mb`: address space a computation may use beyond the idle worker's own."""
        self.memory_mb = memory_mb
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._buffer = b""
        self._request_id = 0

    def call(self, op: str, args: dict[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S, spent_s: float = 0.0) -> Any:
        """Run operation `op` with `args` in the worker; return its result or raise MathToolError.

        `spent_s` is time the caller already spent on this call (checking its arguments); it
        counts against `timeout_s`. If the call is interrupted (Ctrl-C, a signal handler's
        exception), the worker is killed: it may still be computing, and its late reply must
        never be taken for a later request's.
        """
        timeout_s = check_timeout(timeout_s)
        budget_s = timeout_s - spent_s
        if budget_s <= 0:
            raise MathToolError(f"timed out after {timeout_s} s")
        with self._lock:
            self._request_id += 1
            request_id = self._request_id
            request = {"id": request_id, "op": op, "args": args, "timeout_s": budget_s}
            try:
                return self._exchange(request, budget_s, timeout_s)
            except MathToolError:
                raise
            except BaseException:
                self._kill()  # in doubt: the next call starts a fresh worker
                raise

    def _exchange(self, request: dict[str, Any], budget_s: float, timeout_s: float) -> Any:
        line = (json.dumps(request) + "\n").encode()
        for attempt in range(2):  # a worker that died while idle gets one fresh replacement
            proc = self._ensure_ready()
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
                break
            except OSError:
                self._kill()
                if attempt:
                    raise MathToolError("math worker is not accepting requests") from None
        deadline = time.monotonic() + budget_s
        while True:
            reply_line = self._read_line(proc, deadline)
            if reply_line is None:
                self._restart()
                raise MathToolError(f"timed out after {timeout_s} s")
            if reply_line == b"":
                code = proc.wait()
                self._restart()
                raise MathToolError(
                    f"math worker died (exit code {code}); the computation may have "
                    f"exceeded the {self.memory_mb} MB memory limit"
                )
            try:
                reply = json.loads(reply_line)
            except ValueError:
                self._restart()
                raise MathToolError("math worker sent a malformed reply") from None
            if reply.get("id") == request["id"]:
                break
            # A stale reply to an earlier request: never anyone's answer.
        if reply.get("fatal"):
            self._restart()
        if "error" in reply:
            raise MathToolError(reply["error"])
        return reply["result"]

    def start(self) -> None:
        """Start the worker now and wait until it is ready (otherwise the first call does)."""
        with self._lock:
            self._ensure_ready()

    def close(self) -> None:
        """Kill the worker process, if any. A later call starts a new one."""
        with self._lock:
            self._kill()

    def __enter__(self) -> MathWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals; the caller holds self._lock --

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-c",
                _WORKER_BOOT,
                os.path.dirname(_PACKAGE_DIR),
                _PACKAGE_DIR,
                str(self.memory_mb),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            start_new_session=True,  # not in the terminal's process group: Ctrl-C goes to the parent
        )
        self._ready = False
        self._buffer = b""

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                try:
                    pipe.close()
                except OSError:  # unflushed bytes to a dead process
                    pass
            self._proc = None

    def _restart(self) -> None:
        self._kill()
        self._spawn()  # start the replacement now; its imports overlap the caller's work

    def _ensure_ready(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            self._spawn()
        if not self._ready:
            line = self._read_line(self._proc, time.monotonic() + self.startup_timeout_s)
            if line != b'{"ready": true}':
                self._kill()
                reason = "timed out" if line is None else "exited" if line == b"" else f"said {line[:200]!r}"
                raise MathToolError(f"math worker failed to start ({reason}; see its stderr)")
            self._ready = True
        return self._proc

    def _read_line(self, proc: subprocess.Popen, deadline: float) -> bytes | None:
        """One reply line; b"" if the worker exited, None if `deadline` passed."""
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


@dataclass
class _SharedWorker:
    lock: threading.Lock
    worker: MathWorker | None = None


_SHARED = _SharedWorker(threading.Lock())


def shared_worker() -> MathWorker:
    """The process-wide worker used when no `worker` is passed; created on first use."""
    with _SHARED.lock:
        if _SHARED.worker is None:
            _SHARED.worker = MathWorker()
            atexit.register(_SHARED.worker.close)
        return _SHARED.worker
