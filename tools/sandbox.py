"""Run untrusted Python in a throw-away, resource-limited process with no network.

`run(code)` executes `code` with the host's interpreter in isolated mode
(`-I -S`: no site-packages, no user env vars) inside one of two backends that build the
same sandbox:

* ``bwrap`` (Debian's bubblewrap, used when installed and working) makes the namespaces
  and the file tree;
* ``native`` (always available on Linux) makes them itself with unshare(2) and
  pivot_root(2) through ctypes. Without root this needs unprivileged user namespaces; if
  even those are refused the code still runs (rlimits, clean env, own session) and every
  result says, in `warnings`, which isolation is missing.

Either way the code sees a fresh root with read-only /usr, /etc and the interpreter (its
third-party package dirs covered), a private /proc, a minimal /dev and private tmpfs /tmp
and /dev/shm, in new mount/net/pid/ipc/uts namespaces. Its work dir lives on that /tmp,
so nothing of a run exists on the host's disk. The supervisor ("init", pid 1 of the new
pid namespace, `tools/sandbox_init.py`) drops to uid/gid 65534 (when started as root),
sets PR_SET_NO_NEW_PRIVS, a seccomp filter and the rlimits, writes `files`, forks the
user's interpreter with only fds 0-2 open, and reports its raw wait status on a pipe the
code never holds. When init dies the kernel kills everything left in the pid namespace,
so a wall-clock kill leaves nothing behind. See docs/SANDBOX.md for what this does and
does not protect against.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import math
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Backend = Literal["auto", "bwrap", "native"]

SANDBOX_UID = 65534  # nobody
SANDBOX_GID = 65534  # nogroup
INNER_WORKDIR = "/tmp/work"  # cwd of the code when a mount namespace exists
INNER_PYTHON = "/tmp/.python"  # where the interpreter's prefix is bound read-only
MAX_CODE_BYTES = 120_000  # code travels as one argv string (kernel cap: 128 KiB)
MAX_FILES_BYTES = 16 << 20
MAX_FILES = 10_000  # files= entries (each tmpfs holds 16 384 inodes)
MAX_FILE_NAME_BYTES = 1024  # a files= name in UTF-8: checking it costs the host ~depth^2
MAX_FILE_NAME_DEPTH = 32  # path components of a files= name
MAX_NAME_COMPONENT_BYTES = 255  # NAME_MAX: longer fails inside, after start-up
STARTUP_GRACE_S = 15.0  # launcher + init start-up, not counted in timeout_s
DRAIN_GRACE_S = 2.0  # wait for pipes to close after a kill / exit
TEARDOWN_WAIT_S = 30.0  # at most this long for the kernel to end a killed run's processes
CLEANUP_BUDGET_S = 2.0  # host-side removal of a degraded run's work dir
MAX_CLEANUP_ENTRIES = 100_000
MAX_STATUS_BYTES = 64 << 10  # all the supervisor ever says is a few short lines
INIT_SCRIPT = Path(__file__).with_name("sandbox_init.py")  # stdlib only; runs inside
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. `cpu_s` defaults to the wall-clock timeout (rounded up)."""

    timeout_s: float = 5.0
    memory_mb: int = 512  # RLIMIT_AS of every sandboxed process
    file_mb: int = 16  # RLIMIT_FSIZE: largest file a process may write
    nproc: int = 64  # RLIMIT_NPROC: processes + threads of the sandbox uid
    nofile: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 64 << 10  # kept per stream; the rest is counted and dropped
    tmpfs_mb: int = 64  # size of each private tmpfs (/tmp, /dev/shm, ...)

    def __post_init__(self) -> None:
        if not (0 < self.timeout_s <= 600):
            raise ValueError(f"timeout_s must be in (0, 600], got {self.timeout_s!r}")
        if not (32 <= self.memory_mb <= 1 << 20):
            raise ValueError(f"memory_mb must be in [32, 1048576], got {self.memory_mb!r}")
        for name in ("file_mb", "nproc", "nofile", "output_bytes", "tmpfs_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    @property
    def cpu_s(self) -> int:
        return max(1, math.ceil(self.timeout_s))

    def rlimits(self) -> dict[str, tuple[int, int]]:
        """RLIMIT name -> (soft, hard). The CPU hard limit (SIGKILL) is 1 s above soft (SIGXCPU)."""
        mem = self.memory_mb << 20
        return {
            "RLIMIT_CPU": (self.cpu_s, self.cpu_s + 1),
            "RLIMIT_AS": (mem, mem),
            "RLIMIT_FSIZE": (self.file_mb << 20, self.file_mb << 20),
            "RLIMIT_NPROC": (self.nproc, self.nproc),
            "RLIMIT_NOFILE": (self.nofile, self.nofile),
            "RLIMIT_CORE": (0, 0),
            "RLIMIT_MEMLOCK": (0, 0),
            "RLIMIT_MSGQUEUE": (0, 0),
        }


@dataclass(frozen=True)
class ExecResult:
    """What a sandboxed run produced.

    exit_code: the code's exit status; negative N = killed by signal N; None when
    no status exists (wall-clock timeout, or the supervisor itself failed).
    killed_reason: why the run was cut short (timeout, CPU/file limit, signal), else None.
    isolation: the namespaces/measures actually in force; warnings: those missing.
    """

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    killed_reason: str | None
    backend: str = ""
    isolation: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


# --------------------------------------------------------------------------------------
# Host side.


def _is_root() -> bool:
    return os.geteuid() == 0


@functools.lru_cache(maxsize=1)
def _bwrap_path() -> str | None:
    """bwrap's path if it is installed and can build our namespaces here (probed once)."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    probe = [path, *_bwrap_ns_flags(), "--ro-bind", "/", "/", "--proc", "/proc", "true"]
    try:
        ok = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        log.warning("bwrap found at %s but cannot create namespaces here; using native backend", path)
    return path if ok else None


def _bwrap_ns_flags() -> list[str]:
    flags = [
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
    ]
    # As root, bwrap needs no user namespace; init drops to nobody itself, so the code runs
    # as the host's uid 65534 rather than as a remapped uid 0 that owns root's files.
    return flags if _is_root() else ["--unshare-user", *flags]


def _interpreter() -> tuple[str, str]:
    """(prefix, exe relative to prefix) of the real interpreter behind sys.executable."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    if not exe.startswith(prefix + "/"):
        raise RuntimeError(f"interpreter {exe} is not under its prefix {prefix}")
    return prefix, os.path.relpath(exe, prefix)


@functools.lru_cache(maxsize=1)
def _init_source() -> str:
    return INIT_SCRIPT.read_text(encoding="utf-8")


_PACKAGE_DIR_GLOBS = (
    "lib/python3*/site-packages",
    "lib/python3*/dist-packages",
    "lib/python3/dist-packages",
    "local/lib/python3*/site-packages",
    "local/lib/python3*/dist-packages",
)


def _package_dirs(prefix: str) -> list[str]:
    """Third-party package dirs as the sandbox sees them: the interpreter prefix's (bound at
    INNER_PYTHON) and the system ones under /usr. Each is covered with an empty tmpfs."""
    inner = set()
    for root in {prefix, "/usr"}:
        for pattern in _PACKAGE_DIR_GLOBS:
            for path in glob.glob(os.path.join(root, pattern)):
                if not os.path.isdir(path) or os.path.islink(path):
                    continue
                if path.startswith(prefix + "/"):
                    inner.add(INNER_PYTHON + path[len(prefix) :])
                if path.startswith("/usr/"):
                    inner.add(path)
    return sorted(inner)


def _check_files(files: dict[str, str | bytes] | None) -> list[tuple[str, bytes]]:
    """Validated (relative name, bytes) pairs; raises ValueError on any bad entry."""
    checked: list[tuple[str, bytes]] = []
    total = 0
    if files is not None and not isinstance(files, dict):
        raise ValueError(f"files must be a dict of name -> content, got {type(files).__name__}")
    if len(files or {}) > MAX_FILES:
        raise ValueError(f"files: more than {MAX_FILES} entries")
    for name, content in (files or {}).items():
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValueError(f"files: bad file name {name!r:.100}")
        try:
            encoded = name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"files: file name {name!r:.100} is not valid UTF-8 (a lone surrogate)") from None
        if len(encoded) > MAX_FILE_NAME_BYTES or name.count("/") >= MAX_FILE_NAME_DEPTH:
            raise ValueError(
                f"files: file name {name!r:.100} is over {MAX_FILE_NAME_BYTES} bytes "
                f"or {MAX_FILE_NAME_DEPTH} path components"
            )
        parts = Path(name).parts
        if any(len(p.encode("utf-8")) > MAX_NAME_COMPONENT_BYTES for p in parts):
            raise ValueError(f"files: a component of {name!r:.100} is over {MAX_NAME_COMPONENT_BYTES} bytes")
        if Path(name).is_absolute() or ".." in parts or not parts:
            raise ValueError(f"files: {name!r} must be a relative path without '..'")
        if not isinstance(content, (str, bytes)):
            raise ValueError(f"files[{name!r}]: content must be str or bytes, got {type(content).__name__}")
        try:
            data = content.encode() if isinstance(content, str) else content
        except UnicodeEncodeError:
            raise ValueError(f"files[{name!r:.100}]: content is not valid UTF-8 (a lone surrogate)") from None
        total += len(data)
        if total > MAX_FILES_BYTES:
            raise ValueError(f"files: more than {MAX_FILES_BYTES} bytes in total")
        checked.append(("/".join(parts), data))
    names = [n for n, _ in checked]
    dirs = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    if len(set(names)) != len(names) or dirs & set(names):
        raise ValueError("files: a name is given twice, or both as a file and a directory")
    return checked


def _payload(cfg: dict, code: str, files: list[tuple[str, bytes]]) -> int:
    """A memfd holding what sandbox_init reads on stdin: a JSON header line, then the files."""
    fd = os.memfd_create("r1-sandbox-payload", os.MFD_CLOEXEC)
    header = {"cfg": cfg, "code": code, "files": [[n, len(d)] for n, d in files]}
    with os.fdopen(os.dup(fd), "wb") as f:
        f.write(json.dumps(header).encode("utf-8", errors="surrogatepass") + b"\n")
        for _, data in files:
            f.write(data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _remove_tree(path: Path, budget_s: float) -> bool:
    """Delete `path` without recursion, never following a link and changing permissions
    only below it; stops after `budget_s` or MAX_CLEANUP_ENTRIES. True if it is gone.
    Never raises. Only a degraded run (no mount namespace) leaves anything in it."""
    deadline, removed = time.monotonic() + budget_s, 0
    names: list[str] = []  # path from `path` down to the dir `fd` is open on
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        while time.monotonic() < deadline and removed < MAX_CLEANUP_ENTRIES:
            subdirs = []
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                    else:
                        os.unlink(entry.name, dir_fd=fd)
                        removed += 1
            if subdirs:
                # O_PATH opens a 000 dir; chmod through /proc touches exactly that dir.
                pfd = os.open(subdirs[0], os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    os.chmod(f"/proc/self/fd/{pfd}", 0o700)
                    child = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_DIRECTORY)
                finally:
                    os.close(pfd)
                os.close(fd)
                fd = child
                names.append(subdirs[0])
                continue
            if not names:
                os.close(fd)
                fd = -1
                os.rmdir(path)
                return True
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
            removed += 1
    except OSError as exc:
        log.warning("sandbox: cleaning up %s: %s", path, exc)
    finally:
        if fd >= 0:
            os.close(fd)
    return False


@dataclass
class _Stream:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        out = self.data.decode("utf-8", errors="replace")
        if self.dropped:
            out += f"\n[... output truncated: {self.dropped} more bytes ...]\n"
        return out


def _parse_status(line: bytes) -> dict | None:
    """One status message, checked field by field against the few shapes that exist;
    None for anything else."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict):
        return None
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    is_strs = lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)  # noqa: E731
    if "child-pid" in msg:  # ours or bwrap's, which adds its namespace ids
        ok = (
            is_int(msg["child-pid"])
            and msg["child-pid"] > 0
            and all(k == "child-pid" or (k.endswith("-namespace") and is_int(v)) for k, v in msg.items())
        )
        return msg if ok else None
    if set(msg) == {"exit-code"}:  # bwrap's own; init reports the real status
        return msg if is_int(msg["exit-code"]) else None
    event = msg.get("event")
    if event == "ready" and set(msg) == {"event", "isolation", "warnings"}:
        return msg if is_strs(msg["isolation"]) and is_strs(msg["warnings"]) else None
    if event == "exit" and set(msg) == {"event", "status"} and is_int(msg["status"]) and 0 <= msg["status"] <= 0xFFFF:
        try:
            os.waitstatus_to_exitcode(msg["status"])
        except ValueError:
            return None
        return msg
    if event == "error" and set(msg) == {"event", "message"} and isinstance(msg["message"], str):
        return msg
    return None


@dataclass
class _StatusReader:
    """Splits the status pipe into messages. Never raises: a malformed message or more
    than MAX_STATUS_BYTES sets `error`, and nothing after it is read."""

    buf: bytearray = field(default_factory=bytearray)
    total: int = 0
    error: str | None = None

    def feed(self, chunk: bytes) -> list[dict]:
        if self.error is not None:
            return []
        self.total += len(chunk)
        if self.total > MAX_STATUS_BYTES:
            self.error = f"status channel sent more than {MAX_STATUS_BYTES} bytes"
            return []
        self.buf += chunk
        msgs = []
        while (end := self.buf.find(b"\n")) >= 0:
            line = bytes(self.buf[:end])
            del self.buf[: end + 1]
            msg = _parse_status(line)
            if msg is None:
                self.error = f"malformed status message {line[:80]!r}"
                return msgs
            msgs.append(msg)
        return msgs


def _killed_reason(status: int) -> str | None:
    if not os.WIFSIGNALED(status):
        return None
    sig = os.WTERMSIG(status)
    if sig == signal.SIGXCPU:
        return "CPU time limit exceeded (SIGXCPU)"
    if sig == signal.SIGXFSZ:
        return "file size limit exceeded (SIGXFSZ)"
    if sig == signal.SIGKILL:
        return "killed by SIGKILL (CPU hard limit, out of memory, or the code itself)"
    return (
        f"killed by signal {signal.Signals(sig).name}" if sig in signal.valid_signals() else f"killed by signal {sig}"
    )


def run(
    code: str,
    *,
    timeout_s: float = 5,
    memory_mb: int = 512,
    files: dict[str, str | bytes] | None = None,
    backend: Backend = "auto",
    limits: SandboxLimits | None = None,
) -> ExecResult:
    """Run Python `code` in a sandbox and return its output and status. Never raises for
    anything the code does; raises ValueError for bad arguments and RuntimeError when the
    requested backend is unavailable.

    `files` (relative path -> content) are written into the fresh working directory first,
    by the sandbox itself; the directory lives on the run's private tmpfs and vanishes with
    it. `limits`, when given, overrides timeout_s and memory_mb. `backend="auto"` picks
    bwrap when it works here, else native.
    """
    if not isinstance(code, str):
        raise ValueError(f"code must be str, got {type(code).__name__}")
    if "\x00" in code:
        raise ValueError("code must not contain NUL characters")
    if len(code.encode("utf-8", errors="surrogatepass")) > MAX_CODE_BYTES:
        raise ValueError(f"code is over {MAX_CODE_BYTES} bytes in UTF-8")
    limits = limits or SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)
    if backend not in ("auto", "bwrap", "native"):
        raise ValueError(f"backend must be 'auto', 'bwrap' or 'native', got {backend!r}")
    checked_files = _check_files(files)
    bwrap = _bwrap_path() if backend in ("auto", "bwrap") else None
    if backend == "bwrap" and bwrap is None:
        raise RuntimeError("backend 'bwrap' requested but bubblewrap is not installed or cannot create namespaces here")

    # Used only if no mount namespace can be made (degraded mode); mkdtemp's 0700 keeps it
    # private to the caller, who is then also the code's uid.
    base = Path(tempfile.mkdtemp(prefix="r1-sandbox-"))
    try:
        return _execute(code, limits, bwrap, checked_files, base / "work")
    finally:
        if not _remove_tree(base, CLEANUP_BUDGET_S):
            log.warning("sandbox: could not fully remove %s", base)


def _execute(
    code: str, limits: SandboxLimits, bwrap: str | None, files: list[tuple[str, bytes]], host_workdir: Path
) -> ExecResult:
    prefix, exe_rel = _interpreter()
    root = _is_root()
    uid, gid = (SANDBOX_UID, SANDBOX_GID) if root else (os.getuid(), os.getgid())
    tmp_mb = limits.tmpfs_mb + math.ceil(sum(len(d) for _, d in files) / (1 << 20))
    status_r, status_w = os.pipe()
    pass_fds = [status_w]
    inner_exe = f"{INNER_PYTHON}/{exe_rel}"
    package_dirs = _package_dirs(prefix)
    cfg = {
        "status_fd": status_w,
        "uid": uid,
        "gid": gid,
        "rlimits": limits.rlimits(),
        "tmpfs_mb": limits.tmpfs_mb,
        "tmp_mb": tmp_mb,
        "python_prefix": prefix,
        "inner_python": INNER_PYTHON,
        "package_dirs": package_dirs,
        "workdir": INNER_WORKDIR,
        "host_workdir": str(host_workdir),
        "exe": inner_exe,
        # pyenv-style builds carry an absolute RUNPATH to their prefix, which is bound
        # elsewhere inside. Never in the host-side launcher's env (see `env` below).
        "env": {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": INNER_WORKDIR,
            "TMPDIR": INNER_WORKDIR,
            "LD_LIBRARY_PATH": f"{INNER_PYTHON}/lib",
        },
    }
    if bwrap is not None:
        backend_name, stage = "bwrap", "init"
        bwrap_status_w = os.dup(status_w)  # bwrap's own JSON lines share the pipe
        pass_fds.append(bwrap_status_w)
        cfg["isolation"] = [
            "bwrap",
            "mount-ns",
            "pid-ns",
            "net-ns",
            "ipc-ns",
            "uts-ns",
            "private-proc",
            "private-tmp",
            "minimal-root",
        ]
        argv = [
            bwrap,
            *_bwrap_ns_flags(),
            "--as-pid-1",
            "--json-status-fd",
            str(bwrap_status_w),
            "--ro-bind",
            "/usr",
            "/usr",
            "--ro-bind",
            "/etc",
            "/etc",
        ]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                argv += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                argv += ["--ro-bind", d, d]
        argv += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--perms",
            "1777",
            "--size",
            str(tmp_mb << 20),
            "--tmpfs",
            "/tmp",
            "--perms",
            "1777",
            "--size",
            str(limits.tmpfs_mb << 20),
            "--tmpfs",
            "/dev/shm",
            "--ro-bind",
            prefix,
            INNER_PYTHON,
        ]
        for d in package_dirs:
            argv += ["--size", "4096", "--tmpfs", d, "--remount-ro", d]
        if root:
            # CAP_SYS_ADMIN only so that init can cap the inodes of bwrap's tmpfs mounts
            # (bwrap has no option for it); init's change to uid 65534 drops every capability.
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SYS_ADMIN"]
            cfg["cap_inodes"] = ["/tmp", "/dev/shm"]
        # Only the sandboxed command gets LD_LIBRARY_PATH: bwrap itself runs on the host.
        argv += [
            "--setenv",
            "LD_LIBRARY_PATH",
            f"{INNER_PYTHON}/lib",
            "--",
            inner_exe,
            "-I",
            "-S",
            "-c",
            _init_source(),
            stage,
        ]
    else:
        backend_name, stage = "native", "outer"
        cfg["host_exe"] = os.path.join(prefix, exe_rel)
        argv = [cfg["host_exe"], "-I", "-S", "-c", _init_source(), stage]
    # Anyone may plant libraries in /tmp: the launcher, on the host, gets no library path.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

    payload = _payload(cfg, code, files)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=payload,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
            env=env,
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    finally:
        for fd in (payload, *pass_fds):
            os.close(fd)
    outcome = _supervise(proc, status_r, limits)
    duration = time.monotonic() - started

    isolation = tuple(outcome.ready.get("isolation", ()))
    warnings = list(outcome.ready.get("warnings", ()))
    if outcome.ready and "net-ns" not in isolation:  # only code that ran could reach anything
        warnings.insert(0, "NO NETWORK ISOLATION: the code could reach the network")
    for w in warnings:
        log.warning("sandbox: %s", w)
    if outcome.error and outcome.ready:
        warnings.append(f"sandbox supervisor error: {outcome.error}")
        log.warning("sandbox: supervisor error: %s", outcome.error)
    elif outcome.error:  # the code never started: that is the result, not a missing measure
        log.info("sandbox: run did not start: %s", outcome.error)

    stderr = outcome.stderr.text()
    if outcome.timed_out:
        exit_code, reason = None, f"wall-clock timeout after {limits.timeout_s:g}s"
    elif outcome.status is not None:
        exit_code = os.waitstatus_to_exitcode(outcome.status)
        reason = _killed_reason(outcome.status)
    else:
        exit_code = None
        reason = (
            f"sandbox failed to start: {outcome.error or 'no status'}"
            if not outcome.ready
            else "sandbox supervisor died without reporting a status"
        )
    return ExecResult(
        stdout=outcome.stdout.text(),
        stderr=stderr,
        exit_code=exit_code,
        timed_out=outcome.timed_out,
        killed_reason=reason,
        backend=backend_name,
        isolation=isolation,
        warnings=tuple(warnings),
        duration_s=duration,
    )


@dataclass
class _Outcome:
    stdout: _Stream
    stderr: _Stream
    ready: dict = field(default_factory=dict)
    status: int | None = None
    error: str | None = None
    timed_out: bool = False


def _supervise(proc: subprocess.Popen, status_r: int, limits: SandboxLimits) -> _Outcome:
    """Pump the three pipes until they close, enforcing the wall-clock limit; always
    SIGKILLs the launcher's process group before reaping it."""
    out = _Outcome(_Stream(limits.output_bytes), _Stream(limits.output_bytes))
    sinks = {proc.stdout.fileno(): out.stdout, proc.stderr.fileno(): out.stderr}
    reader = _StatusReader()
    sel = selectors.DefaultSelector()
    for fd in (*sinks, status_r):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    t0 = time.monotonic()
    ready_at: float | None = None
    stop_at: float | None = None  # set once the code is finished or killed
    init_pidfd: int | None = None

    def kill_all() -> None:
        if init_pidfd is not None:  # its death tears down the whole pid namespace
            try:
                signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
            except OSError:
                pass
            _wait_for_exit(init_pidfd)
            # Give the launcher a moment to reap it; killed first, it would leave the
            # supervisor a zombie of the host's init (still counted in RLIMIT_NPROC).
            until = time.monotonic() + 1.0
            while (
                time.monotonic() < until and os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
            ):
                time.sleep(0.005)
        _killpg(proc.pid)

    def handle(msg: dict) -> None:
        nonlocal ready_at, stop_at, init_pidfd
        if "child-pid" in msg:
            if init_pidfd is None:
                # Pin the supervisor (pid 1 of the sandbox) so we can kill it even after it
                # leaves our process group; a pidfd cannot hit a recycled pid.
                try:
                    init_pidfd = os.pidfd_open(msg["child-pid"])
                except OSError:
                    pass
        elif msg.get("event") == "ready" and ready_at is None:
            out.ready, ready_at = msg, time.monotonic()
        elif msg.get("event") == "exit" and out.status is None:
            out.status = msg["status"]
            stop_at = time.monotonic() + DRAIN_GRACE_S
        elif msg.get("event") == "error":
            out.error = msg["message"][:1000]

    try:
        while sel.get_map():
            now = time.monotonic()
            deadline = (t0 + STARTUP_GRACE_S) if ready_at is None else ready_at + limits.timeout_s
            if stop_at is None and now >= deadline:
                out.timed_out = ready_at is not None
                if ready_at is None:
                    out.error = out.error or "sandbox did not start in time"
                kill_all()
                stop_at = now + DRAIN_GRACE_S
            if stop_at is not None and now >= stop_at:
                break
            wait = (stop_at if stop_at is not None else deadline) - now
            for key, _ in sel.select(max(0.0, min(wait, 1.0))):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    if key.fd == status_r and stop_at is None:
                        # The supervisor is gone; whatever still holds stdout is an orphan.
                        stop_at = time.monotonic() + DRAIN_GRACE_S
                    continue
                if key.fd != status_r:
                    sinks[key.fd].add(chunk)
                    continue
                for msg in reader.feed(chunk):
                    handle(msg)
                if reader.error is not None:  # not our supervisor talking: stop the run
                    out.error, out.status = reader.error, None
                    sel.unregister(status_r)
                    if stop_at is None:
                        kill_all()
                        stop_at = time.monotonic() + DRAIN_GRACE_S
    finally:
        kill_all()
        if init_pidfd is not None:
            os.close(init_pidfd)
        sel.close()
        os.close(status_r)
        proc.stdout.close()
        proc.stderr.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("sandbox: launcher %d did not die after SIGKILL", proc.pid)
    return out


def _wait_for_exit(pidfd: int) -> None:
    """Block until the process behind `pidfd` (the sandbox's pid 1) has exited. The kernel
    lets pid 1 of a pid namespace finish exiting only after every other process in it has
    been killed and reaped, and each of those dropped its mounts first: so when this returns
    nothing of the run is left but that zombie, which the launcher reaps."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    if not poller.poll(TEARDOWN_WAIT_S * 1000):
        log.error("sandbox: the run's processes did not end within %gs of SIGKILL", TEARDOWN_WAIT_S)


def _killpg(pgid: int) -> None:
    # Safe against pid reuse: the launcher (pid == pgid) is our unreaped child until
    # proc.wait() above, so the group id cannot have been recycled.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------
# LangChain tool.

TOOL_MAX_TIMEOUT_S = 30.0


def format_result(result: ExecResult) -> str:
    """Render a result for a language model: status line, then stdout and stderr."""
    if result.timed_out:
        status = f"timed out ({result.killed_reason})"
    elif result.exit_code is None:
        status = f"failed: {result.killed_reason}"
    else:
        status = f"exit code {result.exit_code}"
        if result.killed_reason:
            status += f" ({result.killed_reason})"
    parts = [f"status: {status}"]
    parts += [f"warning: {w}" for w in result.warnings]
    parts.append("--- stdout ---\n" + (result.stdout or "(empty)"))
    parts.append("--- stderr ---\n" + (result.stderr or "(empty)"))
    return "\n".join(parts)


def sandbox_tool(*, memory_mb: int = 512, backend: Backend = "auto"):
    """The `tools.tool.Tool` `python_exec` that runs model-written Python through `run()`.

    Arguments are validated by pydantic before anything runs; pydantic is imported here
    so that `run()` itself needs only the standard library.
    """
    from pydantic import BaseModel, Field

    from tools.tool import Tool

    class PythonExecArgs(BaseModel):
        code: str = Field(
            description="A complete Python 3.11 program. Use print() for "
            "anything you want to see; only stdout/stderr come back.",
            min_length=1,
            max_length=MAX_CODE_BYTES // 4,
        )
        timeout_s: float = Field(default=5.0, gt=0, le=TOOL_MAX_TIMEOUT_S, description="Wall-clock limit in seconds.")

    def python_exec(code: str, timeout_s: float = 5.0) -> str:
        return format_result(run(code, timeout_s=timeout_s, memory_mb=memory_mb, backend=backend))

    return Tool(
        name="python_exec",
        description=(
            "Run a short Python 3.11 program in an isolated sandbox and return its exit "
            "status, stdout and stderr. Only the standard library is available; there is no "
            "network, no access to the user's files, and no input (stdin is empty). The "
            f"working directory is empty and discarded afterwards. Memory is limited to "
            f"{memory_mb} MB, output to 64 KiB per stream, and the run is killed after "
            "timeout_s seconds. Use it for calculations, data manipulation and checking code."
        ),
        args=PythonExecArgs,
        func=python_exec,
    )
