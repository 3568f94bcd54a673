"""Run untrusted Python in a throw-away, resource-limited process with no network.

`run(code)` executes `code` with the host's interpreter in isolated mode
(`-I -S`: no site-packages, no user env vars) inside one of two backends:

* ``bwrap`` (Debian's bubblewrap, used when installed and working): a fresh
  mount tree holding only read-only /usr, /etc and the interpreter, a private
  /proc, a minimal /dev, tmpfs /tmp and /dev/shm, and new net/pid/ipc/uts
  (and cgroup) namespaces.
* ``native`` (always available on Linux): the same namespaces made with
  unshare(2) through ctypes; the host's root is remounted read-only and
  recursively, /tmp, /var/tmp, /dev/shm and /run/lock become small tmpfs
  mounts, the caller's home, the project and its virtualenv are hidden, and a
  fresh /proc shows only the sandbox.  Without root this needs unprivileged
  user namespaces; if even those are refused the code still runs (rlimits,
  clean env, own session) and every result says, in `warnings`, which
  isolation is missing.

In both, a small supervisor ("init", pid 1 of the new pid namespace) drops to
uid/gid 65534 with no supplementary groups (when started as root), sets
PR_SET_NO_NEW_PRIVS and the rlimits, forks the user's interpreter, reaps and
reports its raw wait status on a private pipe.  When init dies the kernel kills
everything left in the pid namespace, so a wall-clock kill of the launcher's
process group leaves nothing behind.  See docs/SANDBOX.md for what this does
and does not protect against.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
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
INNER_WORKDIR = "/tmp/work"      # cwd of the code when a mount namespace exists
INNER_PYTHON = "/tmp/.python"    # where the interpreter's prefix is bound read-only
MAX_CODE_BYTES = 120_000         # code travels as one argv string (kernel cap: 128 KiB)
MAX_FILES_BYTES = 16 << 20
STARTUP_GRACE_S = 15.0           # launcher + init start-up, not counted in timeout_s
DRAIN_GRACE_S = 2.0              # wait for pipes to close after a kill / exit
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. `cpu_s` defaults to the wall-clock timeout (rounded up)."""
    timeout_s: float = 5.0
    memory_mb: int = 512          # RLIMIT_AS of every sandboxed process
    file_mb: int = 16             # RLIMIT_FSIZE: largest file a process may write
    nproc: int = 64               # RLIMIT_NPROC: processes + threads of the sandbox uid
    nofile: int = 64              # RLIMIT_NOFILE
    output_bytes: int = 64 << 10  # kept per stream; the rest is counted and dropped
    tmpfs_mb: int = 64            # size of each private tmpfs (/tmp, /dev/shm, ...)

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
# The in-sandbox stages. Run as `python -I -S -c _STAGE_SOURCE <json>`, stdlib only, so
# they work inside a bare bwrap tree. Stage "outer" (native backend) makes the namespaces
# and forks "init"; under bwrap, bwrap made them and runs "init" directly as pid 1.
# Every message to the host is one JSON line on cfg["status_fd"].
_STAGE_SOURCE = r'''
import ctypes, json, os, resource, signal, sys

cfg = json.loads(sys.argv[1])
CODE = sys.argv[2]
STATUS = cfg["status_fd"]
os.set_inheritable(STATUS, False)       # the user's code must never see it
libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_mount_setattr, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def emit(**kw):
    os.write(STATUS, (json.dumps(kw) + "\n").encode())


def die(msg):
    try:
        emit(event="error", message=msg)
    except OSError:
        pass
    os._exit(125)


def check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, what + ": " + os.strerror(e))


def mount(src, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    check(libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          "mount " + target)


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def make_namespaces(isolation, warnings):
    root = os.geteuid() == 0
    if not root:
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(CLONE_NEWUSER) == 0:
            # Map our own ids (not 0): the exec'd code then holds no capabilities.
            write_file("/proc/self/setgroups", "deny")
            write_file("/proc/self/uid_map", "%d %d 1" % (uid, uid))
            write_file("/proc/self/gid_map", "%d %d 1" % (gid, gid))
            isolation.append("user-ns")
        else:
            warnings.append("user namespaces unavailable (%s): no namespaces at all"
                            % os.strerror(ctypes.get_errno()))
            return
    wanted = [("mount-ns", CLONE_NEWNS), ("pid-ns", CLONE_NEWPID), ("net-ns", CLONE_NEWNET),
              ("ipc-ns", CLONE_NEWIPC), ("uts-ns", CLONE_NEWUTS)]
    if libc.unshare(sum(f for _, f in wanted)) == 0:
        isolation.extend(n for n, _ in wanted)
        return
    for name, flag in wanted:
        if libc.unshare(flag) == 0:
            isolation.append(name)
        else:
            warnings.append("%s unavailable: %s" % (name, os.strerror(ctypes.get_errno())))


def setup_mounts(isolation, warnings):
    """Build the sandbox's view of the filesystem inside our own mount namespace."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)      # nothing propagates back to the host
    # Open what we bind later before anything covers it (the workdir lives in host /tmp).
    work_fd = os.open(cfg["workdir"], os.O_PATH | os.O_DIRECTORY)
    prefix_fd = os.open(cfg["python_prefix"], os.O_PATH | os.O_DIRECTORY)
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    if libc.syscall(SYS_mount_setattr, AT_FDCWD, b"/", AT_RECURSIVE, attr, 32) == 0:
        isolation.append("read-only-root")
    else:
        warnings.append("could not make / read-only (mount_setattr: %s); relying on file "
                        "permissions" % os.strerror(ctypes.get_errno()))
    tmpfs = "size=%dm,nr_inodes=16384,mode=1777" % cfg["tmpfs_mb"]
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmpfs)
    # A minimal /dev like bwrap's: only harmless character devices, no fuse/tun/kvm/disks.
    devs = {n: os.open("/dev/" + n, os.O_PATH) for n in DEV_NODES if os.path.exists("/dev/" + n)}
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "size=64k,mode=755")
    for name, fd in devs.items():
        os.close(os.open("/dev/" + name, os.O_CREAT | os.O_WRONLY, 0o666))
        mount("/proc/self/fd/%d" % fd, "/dev/" + name, None, MS_BIND)
        os.close(fd)
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, "/dev/" + link)
    os.mkdir("/dev/shm")
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, tmpfs)
    mount(None, "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID, "size=64k,mode=755")
    # Allow-list the top level (system dirs only) and cover everything else, then the
    # named paths that may sit inside an allowed dir (home, project, virtualenv).
    hide = ["/" + n for n in sorted(os.listdir("/")) if n not in cfg["keep_top"]]
    for d in hide + cfg["hide"]:
        if os.path.isdir(d) and not os.path.islink(d):
            mount("tmpfs", d, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=755")
        elif os.path.isfile(d) and not os.path.islink(d):
            mount("/dev/null", d, None, MS_BIND)
    for target, fd, flags in ((cfg["inner_workdir"], work_fd, MS_NOSUID | MS_NODEV),
                              (cfg["inner_python"], prefix_fd, MS_RDONLY | MS_NOSUID | MS_NODEV)):
        os.mkdir(target)
        mount("/proc/self/fd/%d" % fd, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_BIND | MS_REMOUNT | flags)   # clear the inherited ro
        os.close(fd)
    os.chmod("/tmp", 0o1777)
    if "pid-ns" in isolation:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        isolation.append("private-proc")
    isolation.append("private-tmp")


def init(isolation, warnings):
    """Pid 1 of the sandbox: drop privileges, set limits, run the code, report its status."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if cfg["stage"] == "outer":
        if "mount-ns" in isolation:
            setup_mounts(isolation, warnings)
        else:   # no private tree: run from the host paths, /tmp and / stay shared
            warnings.append("no mount namespace: the code sees and may write the host "
                            "filesystem wherever uid %d may" % cfg["uid"])
            cfg.update(exe=cfg["host_exe"], cwd=cfg["workdir"])
            cfg["env"].update(HOME=cfg["workdir"], TMPDIR=cfg["workdir"],
                              LD_LIBRARY_PATH=cfg["python_prefix"] + "/lib")
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
        isolation.append("uid %d" % cfg["uid"])
    # Changing credentials cleared the parent-death signal; without it a killed bwrap (which
    # runs us in a new session, outside the host's kill group) would leave us running.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)   # keeps /proc/1/* (our fds) away from the code
    for name, (soft, hard) in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    os.chdir(cfg["cwd"])
    emit(event="ready", isolation=isolation, warnings=warnings)
    child = os.fork()
    if child == 0:
        try:
            os.execve(cfg["exe"], [cfg["exe"], "-I", "-S", "-c", CODE], cfg["env"])
        finally:
            os.write(2, b"sandbox: exec of the interpreter failed\n")
            os._exit(127)
    while True:       # reap orphans too; we are their reaper in our pid namespace
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            break
    emit(event="exit", status=status)
    os._exit(0)


def main():
    isolation, warnings = list(cfg.get("isolation", [])), []
    try:
        if cfg["stage"] == "init":
            init(isolation, warnings)
        make_namespaces(isolation, warnings)
        pid = os.fork()
        if pid == 0:
            init(isolation, warnings)
        emit(**{"child-pid": pid})     # same message bwrap's --json-status-fd sends
        _, status = os.waitpid(pid, 0)
        os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 125)
    except Exception as exc:
        die("%s: %s" % (type(exc).__name__, exc))


main()
'''


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
        ok = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        log.warning("bwrap found at %s but cannot create namespaces here; using native backend", path)
    return path if ok else None


def _bwrap_ns_flags() -> list[str]:
    flags = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
             "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
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


# Top-level entries the native backend leaves visible (read-only); every other one is
# covered. The interpreter's prefix and the workdir are bound in separately.
KEEP_TOP = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc", "tmp")


def _hidden_paths() -> list[str]:
    """Paths the native backend covers even when they sit inside an allowed directory."""
    paths = {os.path.expanduser("~"), str(PROJECT_ROOT), os.path.realpath(sys.prefix)}
    keep = {"/", *("/" + d for d in KEEP_TOP)}
    return sorted(p for p in paths if p and os.path.isabs(p) and p not in keep)


def _write_files(workdir: Path, files: dict[str, str | bytes] | None, uid: int, gid: int) -> None:
    if not files:
        return
    total = 0
    for name, content in files.items():
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValueError(f"files: bad file name {name!r}")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"files: {name!r} must be a relative path without '..'")
        if not isinstance(content, (str, bytes)):
            raise ValueError(f"files[{name!r}]: content must be str or bytes, "
                             f"got {type(content).__name__}")
        data = content.encode() if isinstance(content, str) else content
        total += len(data)
        if total > MAX_FILES_BYTES:
            raise ValueError(f"files: more than {MAX_FILES_BYTES} bytes in total")
        target = workdir / rel
        for parent in reversed(target.relative_to(workdir).parents[:-1]):
            d = workdir / parent
            if not d.is_dir():
                d.mkdir(mode=0o755)
                os.lchown(d, uid, gid)
        target.write_bytes(data)
        os.lchown(target, uid, gid)


def _rmtree(path: Path) -> None:
    """Remove the run's directory; the code may have chmod-ed parts of it to 000."""
    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix)
    if path.exists():
        log.warning("sandbox: could not fully remove %s", path)


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
    return f"killed by signal {signal.Signals(sig).name}" if sig in signal.valid_signals() \
        else f"killed by signal {sig}"


def run(code: str, *, timeout_s: float = 5, memory_mb: int = 512,
        files: dict[str, str | bytes] | None = None, backend: Backend = "auto",
        limits: SandboxLimits | None = None) -> ExecResult:
    """Run Python `code` in a sandbox and return its output and status. Never raises for
    anything the code does; raises ValueError for bad arguments and RuntimeError when the
    requested backend is unavailable.

    `files` (relative path -> content) are written into the fresh working directory first;
    the directory is deleted afterwards. `limits`, when given, overrides timeout_s and
    memory_mb. `backend="auto"` picks bwrap when it works here, else native.
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
    bwrap = _bwrap_path() if backend in ("auto", "bwrap") else None
    if backend == "bwrap" and bwrap is None:
        raise RuntimeError("backend 'bwrap' requested but bubblewrap is not installed or "
                           "cannot create namespaces here")

    root = _is_root()
    uid, gid = (SANDBOX_UID, SANDBOX_GID) if root else (os.getuid(), os.getgid())
    base = Path(tempfile.mkdtemp(prefix="r1-sandbox-"))
    try:
        os.chmod(base, 0o711)   # nobody must traverse to its workdir, not list the base
        workdir = base / "work"
        workdir.mkdir(mode=0o700)
        os.chown(workdir, uid, gid)
        _write_files(workdir, files, uid, gid)
        return _execute(code, limits, bwrap, workdir, uid, gid)
    finally:
        _rmtree(base)


def _execute(code: str, limits: SandboxLimits, bwrap: str | None, workdir: Path,
             uid: int, gid: int) -> ExecResult:
    prefix, exe_rel = _interpreter()
    status_r, status_w = os.pipe()
    bwrap_status_w = os.dup(status_w)   # bwrap's own JSON lines share the pipe
    cfg = {
        "status_fd": status_w, "uid": uid, "gid": gid,
        "rlimits": limits.rlimits(), "tmpfs_mb": limits.tmpfs_mb,
        "workdir": str(workdir), "python_prefix": prefix, "hide": _hidden_paths(),
        "keep_top": list(KEEP_TOP),
        "inner_workdir": INNER_WORKDIR, "inner_python": INNER_PYTHON,
    }
    if bwrap is not None:
        backend_name = "bwrap"
        inner_exe = f"{INNER_PYTHON}/{exe_rel}"
        cfg.update(stage="init", cwd=INNER_WORKDIR, exe=inner_exe,
                   isolation=["bwrap", "mount-ns", "pid-ns", "net-ns", "ipc-ns", "uts-ns",
                              "private-proc", "private-tmp", "minimal-root"])
        argv = [bwrap, *_bwrap_ns_flags(), "--as-pid-1",
                "--json-status-fd", str(bwrap_status_w),
                "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                argv += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                argv += ["--ro-bind", d, d]
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/tmp",
                 "--perms", "1777", "--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/dev/shm",
                 "--bind", str(workdir), INNER_WORKDIR,
                 "--ro-bind", prefix, INNER_PYTHON, "--chdir", INNER_WORKDIR]
        if _is_root():
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        # Only the sandboxed command gets LD_LIBRARY_PATH: bwrap itself runs on the host,
        # where anyone could plant libraries in /tmp.
        argv += ["--setenv", "LD_LIBRARY_PATH", f"{INNER_PYTHON}/lib",
                 "--", inner_exe, "-I", "-S", "-c", _STAGE_SOURCE]
    else:
        backend_name = "native"
        inner_exe = f"{INNER_PYTHON}/{exe_rel}"
        host_exe = os.path.join(prefix, exe_rel)
        cfg.update(stage="outer", exe=inner_exe, cwd=INNER_WORKDIR, host_exe=host_exe)
        argv = [host_exe, "-I", "-S", "-c", _STAGE_SOURCE]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    # pyenv-style builds carry an absolute RUNPATH to their prefix, which is bound elsewhere
    # inside the sandbox (and may sit under an unreadable /root). Never in the host-side
    # launcher's env: a /tmp path there would let any local user plant a library.
    cfg["env"] = {**env, "HOME": INNER_WORKDIR, "TMPDIR": INNER_WORKDIR,
                  "LD_LIBRARY_PATH": f"{INNER_PYTHON}/lib"}
    argv += [json.dumps(cfg), code]

    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(status_w, bwrap_status_w),
                                env=env, cwd="/", start_new_session=True, close_fds=True)
    finally:
        os.close(status_w)
        os.close(bwrap_status_w)
    outcome = _supervise(proc, status_r, limits)
    duration = time.monotonic() - started

    isolation = tuple(outcome.ready.get("isolation", ()))
    warnings = list(outcome.ready.get("warnings", ()))
    if "net-ns" not in isolation:
        warnings.insert(0, "NO NETWORK ISOLATION: the code could reach the network")
    if outcome.error:
        warnings.append(f"sandbox supervisor error: {outcome.error}")
    for w in warnings:
        log.warning("sandbox: %s", w)

    stderr = outcome.stderr.text()
    if outcome.timed_out:
        exit_code, reason = None, f"wall-clock timeout after {limits.timeout_s:g}s"
    elif outcome.status is not None:
        exit_code = os.waitstatus_to_exitcode(outcome.status)
        reason = _killed_reason(outcome.status)
    else:
        exit_code = None
        reason = ("sandbox failed to start" if not outcome.ready
                  else "sandbox supervisor died without reporting a status")
    return ExecResult(stdout=outcome.stdout.text(), stderr=stderr, exit_code=exit_code,
                      timed_out=outcome.timed_out, killed_reason=reason, backend=backend_name,
                      isolation=isolation, warnings=tuple(warnings), duration_s=duration)


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
    status_buf = bytearray()
    sel = selectors.DefaultSelector()
    for fd in (*sinks, status_r):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    t0 = time.monotonic()
    ready_at: float | None = None
    stop_at: float | None = None   # set once the code is finished or killed
    init_pidfd: int | None = None

    def kill_all() -> None:
        if init_pidfd is not None:   # its death tears down the whole pid namespace
            try:
                signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
            except OSError:
                pass
            # Give the launcher a moment to reap it; killed first, it would leave the
            # supervisor a zombie of the host's init (still counted in RLIMIT_NPROC).
            until = time.monotonic() + 1.0
            while time.monotonic() < until and os.waitid(
                    os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                time.sleep(0.005)
        _killpg(proc.pid)

    def handle_status_lines() -> None:
        nonlocal ready_at, stop_at, init_pidfd
        while b"\n" in status_buf:
            line, _, rest = bytes(status_buf).partition(b"\n")
            status_buf[:] = rest
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "child-pid" in msg and init_pidfd is None:
                # Pin the supervisor (pid 1 of the sandbox) so we can kill it even after it
                # leaves our process group; a pidfd cannot hit a recycled pid.
                try:
                    init_pidfd = os.pidfd_open(int(msg["child-pid"]))
                except (OSError, ValueError):
                    pass
            elif msg.get("event") == "ready" and ready_at is None:
                out.ready, ready_at = msg, time.monotonic()
            elif msg.get("event") == "exit" and out.status is None:
                out.status = int(msg["status"])
                stop_at = time.monotonic() + DRAIN_GRACE_S
            elif msg.get("event") == "error":
                out.error = str(msg.get("message"))

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
                if key.fd == status_r:
                    status_buf.extend(chunk)
                    handle_status_lines()
                else:
                    sinks[key.fd].add(chunk)
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
        code: str = Field(description="A complete Python 3.11 program. Use print() for "
                          "anything you want to see; only stdout/stderr come back.",
                          min_length=1, max_length=MAX_CODE_BYTES // 4)
        timeout_s: float = Field(default=5.0, gt=0, le=TOOL_MAX_TIMEOUT_S,
                                 description="Wall-clock limit in seconds.")

    def python_exec(code: str, timeout_s: float = 5.0) -> str:
        return format_result(run(code, timeout_s=timeout_s, memory_mb=memory_mb,
                                 backend=backend))

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
