"""tools/sandbox.py: functional behaviour, then attacks.

Every attack runs on each backend available here (native always; bwrap when installed)
and asserts two things: the code was contained (its result shows the attempt failed or
was cut short) and the host is unharmed (the `host` fixture checks, after each test, that
no sandbox process survived, no run directory was left behind, no planted file appeared
on the host, host listeners received nothing and the canary files are intact).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import stat
import string
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools import sandbox
from tools.sandbox import ExecResult, SandboxLimits, run

ROOT = os.geteuid() == 0
BACKENDS = ["native"] + (["bwrap"] if sandbox._bwrap_path() else [])
PROJECT = sandbox.PROJECT_ROOT


def nobody_pids() -> set[int]:
    pids = set()
    for p in glob.glob("/proc/[0-9]*"):
        try:
            if os.stat(p).st_uid == sandbox.SANDBOX_UID:
                pids.add(int(p.rsplit("/", 1)[1]))
        except OSError:
            pass
    return pids


def run_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "r1-sandbox-*")))


@dataclass
class Host:
    """Host-side bait and the checks that it was not touched."""

    marker: str
    secret: str
    tcp: socket.socket
    udp: socket.socket
    unix: socket.socket
    open_dir: Path  # world-writable dir in host /tmp
    root_only: Path  # 0600 root-owned file (in a world-traversable dir)
    canary: Path  # world-writable file in host /tmp

    def vars(self) -> dict[str, object]:
        return {
            "marker": self.marker,
            "secret_name": "R1_SANDBOX_SECRET",
            "port": self.tcp.getsockname()[1],
            "udp_port": self.udp.getsockname()[1],
            "unix_name": self.unix.getsockname()[1:].decode(),
            "open_dir": self.open_dir,
            "root_only": self.root_only,
            "canary": self.canary,
            "project": PROJECT,
        }


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def host(tmp_path, monkeypatch):
    marker = f"r1pwn{uuid.uuid4().hex[:10]}"
    secret = uuid.uuid4().hex
    monkeypatch.setenv("R1_SANDBOX_SECRET", secret)
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(b"\0" + marker.encode())
    unix.listen()
    unix.setblocking(False)
    open_dir = Path(tempfile.mkdtemp(prefix=f"{marker}-open-"))
    open_dir.chmod(0o777)
    canary = open_dir / "canary.txt"
    canary.write_text("intact")
    canary.chmod(0o666)
    secret_dir = Path(tempfile.mkdtemp(prefix=f"{marker}-secret-"))
    secret_dir.chmod(0o755)
    root_only = secret_dir / "root_only.txt"
    root_only.write_text(secret)
    root_only.chmod(0o600)
    before_pids, before_dirs = nobody_pids(), run_dirs()
    shared_modes = {d: os.stat(d).st_mode for d in {"/tmp", tempfile.gettempdir()}}
    h = Host(marker, secret, tcp, udp, unix, open_dir, root_only, canary)
    try:
        yield h
        # --- the host is unharmed ---
        deadline = time.monotonic() + 1
        while (left := nobody_pids() - before_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"sandbox processes survived: {left}"
        assert run_dirs() <= before_dirs, "a run directory was left behind"
        assert {d: os.stat(d).st_mode for d in shared_modes} == shared_modes, "/tmp mode changed"
        for sock in (tcp, unix):
            with pytest.raises(BlockingIOError):
                sock.accept()
        with pytest.raises(BlockingIOError):
            udp.recv(10)
        assert canary.read_text() == "intact"
        assert sorted(p.name for p in open_dir.iterdir()) == ["canary.txt"]
        assert root_only.read_text() == secret and stat.S_IMODE(root_only.stat().st_mode) == 0o600
        for where in ("/tmp", "/var/tmp", "/dev/shm", "/etc", "/", str(PROJECT), str(tmp_path)):
            planted = [p for p in glob.glob(f"{where}/*{marker}*") if "-open-" not in p and "-secret-" not in p]
            assert not planted, f"sandbox planted {planted}"
    finally:
        for s in (tcp, udp, unix):
            s.close()
        shutil.rmtree(open_dir, ignore_errors=True)
        shutil.rmtree(secret_dir, ignore_errors=True)


def attack(host: Host, backend: str, code: str, **kw) -> ExecResult:
    src = string.Template(code).substitute(host.vars())
    kw.setdefault("timeout_s", 3)
    return run(src, backend=backend, **kw)


# ----------------------------------------------------------------------------- functional


def test_hello_world(backend):
    r = run("print('hello', 6 * 7)", backend=backend)
    assert r.ok and r.stdout == "hello 42\n" and r.stderr == ""
    assert r.exit_code == 0 and not r.timed_out and r.killed_reason is None
    assert r.backend == backend and "net-ns" in r.isolation and "pid-ns" in r.isolation
    assert r.warnings == ()


@pytest.mark.parametrize(
    "code,expected",
    [
        ("import sys; sys.exit(3)", 3),
        ("raise SystemExit(0)", 0),
        ("import os; os._exit(42)", 42),
    ],
)
def test_exit_codes(backend, code, expected):
    assert run(code, backend=backend).exit_code == expected


def test_exception_goes_to_stderr(backend):
    r = run("def f():\n    raise ValueError('boom')\nf()", backend=backend)
    assert r.exit_code == 1 and not r.ok
    assert "Traceback" in r.stderr and "ValueError: boom" in r.stderr and r.stdout == ""


def test_files_are_in_cwd(backend):
    files = {"data.txt": "a,b\n1,2\n", "sub/dir/blob.bin": bytes(range(256))}
    code = (
        "import os, csv\n"
        "print(list(csv.reader(open('data.txt'))))\n"
        "print(len(open('sub/dir/blob.bin','rb').read()), os.access('data.txt', os.W_OK))"
    )
    r = run(code, files=files, backend=backend)
    assert r.ok, r.stderr
    assert r.stdout == "[['a', 'b'], ['1', '2']]\n256 True\n"


def test_unicode_output(backend):
    r = run("print('héllo ✓ 数学 🙂'); import sys; sys.stderr.write('ошибка\\n')", backend=backend)
    assert r.stdout == "héllo ✓ 数学 🙂\n" and r.stderr == "ошибка\n"


def test_runs_as_nobody_with_clean_env(backend):
    r = run(
        "import os, sys, json; print(json.dumps([os.getuid(), os.getgid(), os.getgroups(),"
        " dict(os.environ), sys.flags.isolated, sys.flags.no_site]))",
        backend=backend,
    )
    uid, gid, groups, env, isolated, no_site = json.loads(r.stdout)
    if ROOT:
        assert (uid, gid, groups) == (65534, 65534, [])
    assert set(env) <= {"PATH", "HOME", "LANG", "TMPDIR", "LD_LIBRARY_PATH"}
    assert isolated == 1 and no_site == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0},
        {"timeout_s": -1},
        {"memory_mb": 1},
        {"files": {"../escape.txt": "x"}},
        {"files": {"/etc/passwd": "x"}},
        {"files": {"a": 3}},
        {"files": {".": "x"}},
        {"files": {"a": "x", "a/b": "y"}},
        {"files": {"a/b": "x", "./a//b": "y"}},
        {"backend": "docker"},
    ],
)
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        run("print(1)", **kwargs)


def test_large_unicode_code_runs_and_oversized_code_is_rejected(backend):
    code = "#" + "数" * 39_000 + "\nprint(len(" + repr("\n" * 1000) + "))"
    r = run(code, backend=backend)
    assert r.ok and r.stdout == "1000\n", r.stderr
    with pytest.raises(ValueError, match="bytes"):
        run("#" + "数" * 41_000, backend=backend)


def test_bad_code_type_and_nul_rejected():
    with pytest.raises(ValueError):
        run(b"print(1)")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        run("print(1)\x00")


def test_host_side_launcher_gets_no_library_path(backend, monkeypatch):
    """LD_LIBRARY_PATH points into /tmp for the sandboxed interpreter; the launcher (root,
    on the host) must not get it, or any local user could plant a library there."""
    seen = {}
    real_popen = subprocess.Popen

    def spy(argv, **kw):
        seen.update(kw["env"])
        return real_popen(argv, **kw)

    monkeypatch.setattr(sandbox.subprocess, "Popen", spy)
    r = run("import os; print(os.environ['LD_LIBRARY_PATH'])", backend=backend)
    assert r.ok and r.stdout == "/tmp/.python/lib\n"
    assert "LD_LIBRARY_PATH" not in seen and set(seen) <= {"PATH", "LANG"}


def test_limits_dataclass_rlimits():
    lim = SandboxLimits(timeout_s=2.5, memory_mb=256)
    r = lim.rlimits()
    assert r["RLIMIT_CPU"] == (3, 4) and r["RLIMIT_AS"] == (256 << 20,) * 2
    assert r["RLIMIT_CORE"] == (0, 0) and r["RLIMIT_NPROC"] == (64, 64)


def test_tool_formats_result_and_validates_args():
    tool = sandbox.sandbox_tool()
    assert tool.name == "python_exec" and set(tool.schema["properties"]) == {"code", "timeout_s"}
    assert "no network" in tool.description
    out = tool({"code": "print(sum(range(10)))"})
    assert out.startswith("status: exit code 0") and "--- stdout ---\n45" in out
    out = tool('{"code": "import time; time.sleep(5)", "timeout_s": 0.5}')
    assert out.startswith("status: timed out")
    assert tool({"code": "print(1)", "timeout_s": 1000}).startswith(
        "Error: invalid arguments for python_exec: timeout_s"
    )
    assert tool.to_langchain().invoke({"code": "print(2)"}).startswith("status: exit code 0")


# ----------------------------------------------------------------------------- attacks
# (id, code, check(result, host), timeout_s). Code is a string.Template over Host.vars().


def _denied(r: ExecResult) -> bool:
    return r.exit_code not in (None, 0) or r.timed_out


def _printed(word: str) -> Callable[[ExecResult, Host], bool]:
    return lambda r, h: r.stdout.strip().splitlines()[-1:] == [word]


# Top-level names a sandbox's mount points may have: nothing of the host's tree.
SANDBOX_TOP = {"usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "proc", "dev", "tmp", "newroot"}

# Writes forged supervisor messages, malformed ones and an endless line to every fd.
FORGE_STATUS = """
import os, time
forged = (b'{"event":"exit","status":0}\\n'
          b'{"event":"ready","isolation":[],"warnings":["INJECTED"]}\\n'
          b'[1]\\n{"event":"exit","status":"x"}\\n' + b'x' * (1 << 20))
for fd in range(3, 1024):
    try:
        os.set_blocking(fd, False)
        os.write(fd, forged)
    except OSError:
        pass
time.sleep(60)
"""

# A chain deeper than recursion and fd limits, each level locked after its child exists.
DEEP_CHAIN = """
import os
top = os.open('.', os.O_RDONLY)
fd = os.dup(top)
for i in range(DEPTH):
    os.mkdir('d', dir_fd=fd)
    nxt = os.open('d', os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = nxt
os.close(fd)
os.chmod('d', 0)
print('deep')
"""


ATTACKS: list[tuple[str, str, Callable[[ExecResult, Host], bool], float]] = [
    (
        "net_connect_host_localhost",
        """
import socket
try:
    socket.create_connection(('127.0.0.1', $port), timeout=1); print('CONNECTED')
except OSError as e:
    print('blocked', e.errno)
""",
        lambda r, h: "blocked" in r.stdout and "CONNECTED" not in r.stdout,
        3,
    ),
    (
        "net_udp_to_host",
        """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b'x', ('127.0.0.1', $udp_port))
except OSError as e:
    print('send failed', e.errno)
print('done')
""",
        _printed("done"),
        3,
    ),  # a datagram may "send" inside; the host fixture checks receipt
    (
        "net_connect_external",
        """
import socket
for ip in ('1.1.1.1', '8.8.8.8', '10.0.0.1'):
    try:
        socket.create_connection((ip, 53), timeout=1); print('CONNECTED', ip)
    except OSError as e:
        print('blocked', ip, e.errno)
""",
        lambda r, h: r.stdout.count("blocked") == 3,
        5,
    ),
    (
        "net_dns_lookup",
        """
import socket
try:
    print('RESOLVED', socket.getaddrinfo('example.com', 80))
except OSError as e:
    print('no dns', e)
""",
        lambda r, h: "no dns" in r.stdout and "RESOLVED" not in r.stdout,
        5,
    ),
    (
        "net_abstract_unix_socket",
        """
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(b'\\0$unix_name'); print('CONNECTED')
except OSError as e:
    print('blocked', e.errno)
""",
        lambda r, h: "blocked" in r.stdout,
        3,
    ),
    (
        "fork_bomb",
        """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""",
        lambda r, h: r.timed_out or r.killed_reason is not None,
        1.5,
    ),
    (
        "thread_bomb",
        """
import threading, time
n = 0
try:
    while True:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start(); n += 1
except (RuntimeError, MemoryError) as e:
    print('stopped at', n, type(e).__name__, flush=True)
import os; os._exit(0)
""",
        lambda r, h: "stopped at" in r.stdout and int(r.stdout.split()[2]) <= 64,
        5,
    ),
    (
        "memory_bomb_single",
        "x = bytearray(4 << 30)\nprint('ALLOCATED')",
        lambda r, h: "MemoryError" in r.stderr and "ALLOCATED" not in r.stdout,
        5,
    ),
    (
        "memory_bomb_growing",
        "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 << 20))",
        lambda r, h: "MemoryError" in r.stderr or r.killed_reason is not None,
        5,
    ),
    ("infinite_loop", "while True:\n    pass", lambda r, h: r.timed_out or "CPU" in (r.killed_reason or ""), 1),
    (
        "sleep_past_timeout",
        "import time\nprint('started', flush=True)\ntime.sleep(60)",
        lambda r, h: r.timed_out and r.exit_code is None and r.stdout == "started\n" and r.duration_s < 5,
        1,
    ),
    (
        "daemonized_child_survives_parent",
        """
import os, subprocess, sys
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(1); os.close(2)
        import time; time.sleep(60)
    os._exit(0)
print('parent exits')
""",
        lambda r, h: r.ok and "parent exits" in r.stdout,
        3,
    ),  # host fixture: no survivors
    (
        "ignore_sigterm",
        """
import signal, time
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
    signal.signal(s, signal.SIG_IGN)
while True:
    time.sleep(0.01)
""",
        lambda r, h: r.timed_out,
        1,
    ),
    ("close_stdout_and_hang", "import os, time\nos.close(1); os.close(2)\ntime.sleep(60)", lambda r, h: r.timed_out, 1),
    ("stdin_is_empty", "import sys\nprint(repr(sys.stdin.read()))", lambda r, h: r.ok and r.stdout == "''\n", 3),
    (
        "disk_fill_one_file",
        """
chunk = b'x' * (1 << 20)
with open('big.bin', 'wb') as f:
    for i in range(200):
        f.write(chunk)
print('WROTE 200 MiB')
""",
        lambda r, h: "WROTE" not in r.stdout and ("File too large" in r.stderr or r.killed_reason is not None),
        5,
    ),
    (
        "disk_fill_tmp",
        """
import os
chunk = b'x' * (1 << 20)
n = 0
try:
    for i in range(1000):
        with open('/tmp/fill%d' % i, 'wb') as f:
            for _ in range(8):
                f.write(chunk); n += 1
except OSError as e:
    print('stopped at', n, 'MiB', e.errno)
""",
        lambda r, h: "stopped at" in r.stdout and 8 <= int(r.stdout.split()[2]) <= 64,
        5,
    ),
    (
        "host_devices",
        """
import os
print(sorted(os.listdir('/dev')))
for d in ('/dev/fuse', '/dev/net/tun', '/dev/kmsg', '/dev/mem', '/dev/vda', '/dev/sda', '/dev/kvm'):
    try:
        os.close(os.open(d, os.O_RDWR)); print('OPENED', d)
    except OSError as e:
        print('denied', d, e.errno)
""",
        lambda r, h: "OPENED" not in r.stdout and "fuse" not in r.stdout.splitlines()[0],
        3,
    ),
    (
        "huge_stdout",
        "import sys\nsys.stdout.write('x' * (10 << 20))\nprint('END')",
        lambda r, h: r.ok and len(r.stdout) < (64 << 10) + 200 and "truncated" in r.stdout,
        5,
    ),
    (
        "huge_stderr",
        "import sys\nfor _ in range(200000):\n    sys.stderr.write('e' * 100)",
        lambda r, h: r.ok and len(r.stderr) < (64 << 10) + 200 and "truncated" in r.stderr,
        5,
    ),
    (
        "write_host_tmp_dir",
        """
import os
for p in ('$open_dir/$marker', '$canary', '/tmp/$marker', '/var/tmp/$marker'):
    try:
        with open(p, 'w') as f:
            f.write('pwned')
        print('wrote', p)
    except OSError as e:
        print('denied', p, e.errno)
""",
        lambda r, h: True,
        3,
    ),  # writes may land in private tmpfs; fixture checks the host
    (
        "write_etc_and_project",
        """
for p in ('/etc/$marker', '/$marker', '$project/$marker', '/usr/$marker', '/etc/passwd'):
    try:
        open(p, 'a').write('pwned')
        print('WROTE', p)
    except OSError as e:
        print('denied', p, e.errno)
""",
        lambda r, h: "WROTE" not in r.stdout and r.stdout.count("denied") == 5,
        3,
    ),
    (
        "read_root_only_file",
        """
for p in ('$root_only', '/etc/shadow', '/root/.bashrc', '/proc/1/environ'):
    try:
        print('READ', p, open(p).read())
    except OSError as e:
        print('denied', p, e.errno)
""",
        lambda r, h: h.secret not in r.stdout and (not ROOT or "READ" not in r.stdout),
        3,
    ),
    (
        "read_parent_environment",
        """
import os, glob
print(dict(os.environ))
print(open('/proc/self/environ', 'rb').read())
for p in glob.glob('/proc/[0-9]*/environ') + ['/proc/%d/environ' % os.getppid()]:
    try:
        print(p, open(p, 'rb').read())
    except OSError as e:
        print('denied', p, e.errno)
print('pids visible:', sorted(int(p.split('/')[2]) for p in glob.glob('/proc/[0-9]*')))
""",
        lambda r, h: h.secret not in r.stdout and "R1_SANDBOX_SECRET" not in r.stdout,
        3,
    ),
    (
        "kill_parent",
        """
import os, signal
os.kill(os.getppid(), signal.SIGKILL)
os.kill(1, signal.SIGKILL)
print('still here')
""",
        lambda r, h: "still here" in r.stdout,
        3,
    ),
    (
        "kill_everything",
        """
import os, signal, subprocess
subprocess.run(['kill', '-9', '-1'])
os.kill(-1, signal.SIGKILL)
""",
        lambda r, h: r.exit_code == -9,
        3,
    ),
    (
        "ctypes_privileged_calls",
        """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print('setuid', libc.setuid(0))
print('mount', libc.mount(b'tmpfs', b'/etc', b'tmpfs', 0, None))
print('sethostname', libc.sethostname(b'pwned', 5))
print('reboot', libc.reboot(0x4321FEDC))
""",
        lambda r, h: r.stdout.count("-1") == 4 if ROOT else "mount -1" in r.stdout,
        3,
    ),
    (
        "ctypes_segfault",
        "import ctypes\nctypes.string_at(0)",
        lambda r, h: r.exit_code == -11 and "SIGSEGV" in (r.killed_reason or ""),
        3,
    ),
    (
        "spawn_subprocesses",
        """
import subprocess
print(subprocess.run(['id', '-u'], capture_output=True, text=True).stdout.strip())
print(subprocess.run(['sh', '-c', 'cat /etc/shadow; su -c id root; echo rc=$$?'],
                     capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout)
""",
        lambda r, h: (not ROOT or r.stdout.startswith("65534")) and "root:" not in r.stdout,
        5,
    ),
    (
        "proc_tricks",
        """
import os
for p in ('/proc/1/root/etc', '/proc/1/cwd', '/proc/1/fd', '/proc/self/root/proc/1/root'):
    try:
        print('LISTED', p, os.listdir(p))
    except OSError as e:
        print('denied', p, e.errno)
for p in ('/proc/sys/kernel/hostname', '/proc/sysrq-trigger', '/proc/self/oom_score_adj'):
    try:
        open(p, 'w').write('-1000' if 'oom' in p else 'x'); print('WROTE', p)
    except OSError as e:
        print('denied', p, e.errno)
""",
        lambda r, h: (
            "LISTED /proc/1/fd" not in r.stdout
            and "WROTE /proc/sys" not in r.stdout
            and "WROTE /proc/sysrq" not in r.stdout
        ),
        3,
    ),
    (
        "symlink_escape",
        """
import os
os.symlink('/etc/passwd', 'passwd')
os.symlink('/', 'rootfs')
os.symlink('$canary', 'canary')
os.symlink('$root_only', 'secret')
os.mkdir('locked'); open('locked/f', 'w').write('x'); os.chmod('locked', 0)
for p in ('canary', 'secret', 'rootfs/etc/$marker'):
    try:
        open(p, 'a').write('pwned'); print('WROTE', p)
    except OSError as e:
        print('denied', p, e.errno)
""",
        lambda r, h: "WROTE secret" not in r.stdout and "WROTE rootfs" not in r.stdout,
        3,
    ),
    (
        "setuid_attempts",
        """
import os
for f, a in ((os.setuid, 0), (os.setgid, 0), (os.setgroups, [0]), (os.seteuid, 0),
             (os.chroot, '/'), (os.setresuid, (0, 0, 0))):
    try:
        f(*a) if isinstance(a, tuple) else f(a); print('SUCCEEDED', f.__name__)
    except OSError as e:
        print('denied', f.__name__, e.errno)
print(os.getuid(), os.geteuid())
""",
        lambda r, h: "SUCCEEDED" not in r.stdout and (not ROOT or "65534 65534" in r.stdout),
        3,
    ),
    (
        "raise_rlimits",
        """
import resource
for name in ('RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_NPROC', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE'):
    lim = getattr(resource, name)
    try:
        resource.setrlimit(lim, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print('RAISED', name)
    except (ValueError, OSError) as e:
        print('denied', name)
""",
        lambda r, h: "RAISED" not in r.stdout and r.stdout.count("denied") == 5,
        3,
    ),
    (
        "write_dev_shm",
        """
import os
from multiprocessing import shared_memory
open('/dev/shm/$marker', 'w').write('pwned')
shm = shared_memory.SharedMemory(name='$marker-seg', create=True, size=1 << 20)
print('wrote private shm')
""",
        lambda r, h: True,
        3,
    ),  # fixture checks host /dev/shm stays clean
    (
        "import_site_packages",
        """
import sys, os
print([p for p in sys.path if 'site-packages' in p])
for mod in ('langchain_core', 'torch', 'pydantic', 'tools.sandbox'):
    try:
        __import__(mod); print('IMPORTED', mod)
    except ImportError:
        print('missing', mod)
for p in ('$project', '$project/.venv', os.path.expanduser('~')):
    try:
        print('LISTING', p, os.listdir(p))
    except OSError as e:
        print('denied', p, e.errno)
""",
        lambda r, h: (
            "IMPORTED" not in r.stdout and "site-packages" not in r.stdout and "pyproject.toml" not in r.stdout
        ),
        3,
    ),
    # --- issue 20 ---------------------------------------------------------------------
    (
        "no_descriptor_beyond_stdio",
        """
import os
held = []
for fd in range(3, 1024):
    try:
        os.fstat(fd); held.append(fd)
    except OSError:
        pass
print('held', held)
""",
        _printed("held []"),
        3,
    ),
    (
        "forge_status_on_every_fd",
        FORGE_STATUS,
        lambda r, h: r.timed_out and not r.ok and "INJECTED" not in " ".join(r.warnings),
        1,
    ),
    (
        "nested_user_namespace_tmpfs",
        """
import ctypes, subprocess
libc = ctypes.CDLL(None, use_errno=True)
print('unshare(1)', subprocess.run(['unshare', '-U', 'true'], capture_output=True).returncode)
if libc.unshare(0x10000000 | 0x20000) != 0:        # CLONE_NEWUSER | CLONE_NEWNS
    print('denied', ctypes.get_errno())
    raise SystemExit
print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, b'size=512m'), flush=True)
chunk = b'x' * (1 << 20)
for i in range(20):                     # 160 MiB of tmpfs against memory_mb=64
    with open('/tmp/f%d' % i, 'wb') as f:
        for _ in range(8):
            f.write(chunk)
print('WROTE 160 MiB')
""",
        lambda r, h: "denied" in r.stdout and "WROTE" not in r.stdout and "unshare(1) 0" not in r.stdout,
        5,
    ),
    (
        "sigint_to_supervisor",
        """
import os, signal, time
os.kill(1, signal.SIGINT)
time.sleep(0.3)
print('alive')
""",
        lambda r, h: (
            r.ok and r.stdout == "alive\n" and "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr
        ),
        3,
    ),
    (
        "mountinfo_shows_no_host_paths",
        """
for line in open('/proc/self/mountinfo'):
    f = line.split()
    print(f[3], f[4])
""",
        lambda r, h: (
            "r1-sandbox" not in r.stdout
            and str(PROJECT) not in r.stdout
            and all(
                point.split("/")[1] in SANDBOX_TOP
                for point in (ln.split()[1] for ln in r.stdout.splitlines())
                if point != "/"
            )
        ),
        3,
    ),
    (
        "import_from_package_dirs",
        """
import glob, os, sys
dirs = [d for pattern in ('/tmp/.python/lib/python3*/*-packages', '/tmp/.python/lib/python3/*-packages',
                          '/usr/lib/python3*/*-packages', '/usr/local/lib/python3*/*-packages')
        for d in glob.glob(pattern)]
sys.path.extend(dirs)
print('entries', sum(len(os.listdir(d)) for d in dirs))
for mod in ('pip', 'setuptools', 'pydantic', 'langchain_core', 'numpy'):
    try:
        __import__(mod); print('IMPORTED', mod)
    except ImportError:
        pass
""",
        lambda r, h: "entries 0" in r.stdout and "IMPORTED" not in r.stdout,
        5,
    ),
    ("deep_directory_chain_3000", DEEP_CHAIN.replace("DEPTH", "3000"), _printed("deep"), 5),
    ("deep_locked_directory_chain_2000", DEEP_CHAIN.replace("DEPTH", "2000"), _printed("deep"), 5),
    (
        "ptrace_and_new_namespaces",
        """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print('ptrace init', libc.ptrace(16, 1, 0, 0))     # PTRACE_ATTACH to the supervisor
print('unshare net', libc.unshare(0x40000000))     # CLONE_NEWNET without privileges
""",
        lambda r, h: "ptrace init -1" in r.stdout and "unshare net -1" in r.stdout,
        3,
    ),
    # --- issue 30 (findings 6 and 12) ---
    (
        "memfd_memory_outside_rlimit_as",
        """
import os
try:
    fd = os.memfd_create('hog'); os.ftruncate(fd, 256 << 20); print('MEMFD', fd)
except OSError as e:
    print('refused', e.errno)
""",
        lambda r, h: "refused 1" in r.stdout and "MEMFD" not in r.stdout,
        3,
    ),
    (
        "af_vsock_socket",
        """
import socket
try:
    s = socket.socket(40, socket.SOCK_STREAM); s.bind((0xFFFFFFFF, 1234)); print('BOUND')
except OSError as e:
    print('refused', e.errno)
""",
        lambda r, h: "refused 97" in r.stdout and "BOUND" not in r.stdout,
        3,
    ),
    (
        "inotify_on_the_etc_bind",
        """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
print('refused' if fd < 0 else 'WATCHING', ctypes.get_errno())
""",
        lambda r, h: "refused 1" in r.stdout,
        3,
    ),
    (
        "set_loginuid_to_root",
        """
try:
    with open('/proc/self/loginuid', 'w') as f:
        f.write('0')
    print('SET')
except FileNotFoundError:
    print('refused (no audit)')
except OSError as e:
    print('refused', e.errno)
print('loginuid', open('/proc/self/loginuid').read() if __import__('os').path.exists('/proc/self/loginuid') else '-')
""",
        lambda r, h: "refused" in r.stdout and "SET" not in r.stdout and "loginuid 0" not in r.stdout,
        3,
    ),
]


@pytest.mark.parametrize("name,code,check,timeout_s", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_is_contained(backend, host, name, code, check, timeout_s):
    r = attack(host, backend, code, timeout_s=timeout_s)
    assert check(r, host), f"{name} on {backend} not contained:\n{r}"
    assert r.warnings == (), r.warnings


# ----------------------------------------------------------------------------- issue 30


def test_files_names_are_capped_before_any_work(backend):
    """A 45 KB name of 15,000 components cost the host 6-9 s and +324 MiB; lone surrogates
    raised UnicodeEncodeError (finding 7). Both are ValueErrors at once now."""
    deep = "/".join(["d"] * 15_000) + "/f.txt"
    for files in (
        {deep: "x"},
        {"a" * 300: "x"},
        {"x" * 2000: "x"},
        {"\ud800.txt": "x"},
        {"ok.txt": "\udc00"},
        {f"f{i}": "" for i in range(20_000)},
    ):
        started = time.monotonic()
        with pytest.raises(ValueError, match="files"):
            run("print(1)", files=files, backend=backend)
        assert time.monotonic() - started < 0.5
    assert run("print(open('a/b/c.txt').read())", files={"a/b/c.txt": "deep ok"}, backend=backend).stdout == "deep ok\n"


def test_a_run_that_never_started_reports_its_cause(backend, monkeypatch, caplog):
    """A name that fails inside the sandbox (NAME_MAX, let through by lifting the host-side
    cap) was reported as "NO NETWORK ISOLATION" at WARNING (finding 12)."""
    monkeypatch.setattr(sandbox, "MAX_NAME_COMPONENT_BYTES", 10_000, raising=False)
    with caplog.at_level("WARNING", logger="tools.sandbox"):
        r = run("print(1)", files={"n" * 300: "x"}, backend=backend)
    assert r.exit_code is None and r.stdout == ""
    assert r.killed_reason.startswith("sandbox failed to start") and "too long" in r.killed_reason, r
    assert r.warnings == () and not caplog.records, (r, caplog.records)


HOSTILE_BURST = [
    # two processes making directories as fast as they can (finding 13's reproduction)
    "import os\nos.fork()\ni = 0\nwhile True:\n    try:\n        os.mkdir('m%d_%d' % (os.getpid(), i))\n"
    "    except OSError:\n        pass\n    i += 1\n",
    # files in both tmpfs mounts, from several processes
    "import os\n[os.fork() for _ in range(2)]\ni = 0\nwhile True:\n    for d in ('/dev/shm', '.'):\n"
    "        try:\n            open('%s/f%d_%d' % (d, os.getpid(), i), 'w').close()\n        except OSError:\n"
    "            pass\n    i += 1\n",
    # daemons that leave their session and ignore SIGTERM, while the main process exits at once
    "import os, signal, time\nfor _ in range(6):\n    if os.fork() == 0:\n        os.setsid()\n"
    "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n        while True: time.sleep(0.01)\nprint('left')\n",
    # memory held by several processes
    "import os, time\n[os.fork() for _ in range(2)]\nb = bytearray(96 << 20)\nfor i in range(0, len(b), 4096):\n"
    "    b[i] = 1\ntime.sleep(60)\n",
]


def test_a_burst_of_hostile_runs_leaves_nothing_when_run_returns(backend):
    """run() returns only when every process of the run is gone and its directory removed,
    within timeout_s + 1 s of the code's start (finding 13: two mkdir loops under
    timeout_s=5 returned after 6.1 s with 3 uid-65534 processes still alive)."""
    before_pids, before_dirs = nobody_pids(), run_dirs()
    started = time.monotonic()
    run("pass", backend=backend)
    start_up = time.monotonic() - started  # this machine's start-up time, now
    for code, timeout_s in zip(HOSTILE_BURST, (5, 1.5, 1.5, 1.5)):  # 5 s: the issue's own run
        started = time.monotonic()
        r = run(code, backend=backend, timeout_s=timeout_s)
        elapsed = time.monotonic() - started
        left, dirs = nobody_pids() - before_pids, run_dirs() - before_dirs
        assert not left and not dirs, f"left after run() returned: {left} {dirs}\n{code}"
        assert r.timed_out or r.ok, r
        assert elapsed < timeout_s + 1 + start_up, f"{elapsed:.2f}s (start-up {start_up:.2f}s) for\n{code}"
    with ThreadPoolExecutor(3) as pool:  # three at a time
        results = list(pool.map(lambda c: run(c, backend=backend, timeout_s=1.5), HOSTILE_BURST))
    assert all(r.timed_out or r.ok for r in results), results
    assert not nobody_pids() - before_pids and not run_dirs() - before_dirs


def test_kill_minus_one_spares_other_nobody_processes(backend, host):
    """A host process running as the sandbox uid outside the sandbox survives `kill -9 -1`."""
    if not ROOT or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to start a host process as nobody")
    bystander = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", shutil.which("sleep") or "/bin/sleep", "30"]
    )
    try:
        time.sleep(0.1)
        r = attack(
            host,
            backend,
            "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\n"
            "except ProcessLookupError:\n    print('nothing to kill')\n"
            "print('alive')",
        )
        assert r.ok and r.stdout.endswith("alive\n"), r
        assert bystander.poll() is None, "kill -9 -1 inside the sandbox reached the host"
    finally:
        bystander.kill()
        bystander.wait()


def test_timeout_leaves_no_process_group(backend, host):
    r = attack(
        host,
        backend,
        "import os, time\nprint(os.getpgrp(), flush=True)\n[os.fork() for _ in range(3)]\ntime.sleep(60)",
        timeout_s=1,
    )
    assert r.timed_out and r.killed_reason.startswith("wall-clock timeout")
    # The fixture asserts that no process of the sandbox uid is left on the host.


# ----------------------------------------------------------------------------- issue 20

SYSTEM_PYTHON = "/usr/bin/python3"


def as_user(uid: int) -> list[str]:
    """argv prefix that runs a host command as `uid` (a bystander outside the sandbox)."""
    if not ROOT or shutil.which("setpriv") is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root, setpriv and a system python3 to act as another host user")
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


_KEYRING = """
import ctypes, platform
add_key, keyctl = {'x86_64': (248, 250), 'aarch64': (217, 219)}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
secret = b'SECRET'
if 'MODE' == 'store':
    print('add_key', libc.syscall(add_key, b'user', b'r1-NAME', secret, len(secret), -4))
else:
    kid = libc.syscall(keyctl, 10, -4, b'user', b'r1-NAME', 0)      # KEYCTL_SEARCH @u
    buf = ctypes.create_string_buffer(256)
    n = libc.syscall(keyctl, 11, kid, buf, 256)                    # KEYCTL_READ
    print('read', kid, buf.raw[:max(n, 0)])
"""


def test_kernel_keyring_does_not_outlive_a_run(backend, host):
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("syscall numbers known for x86_64 and aarch64 only")
    code = _KEYRING.replace("SECRET", host.secret).replace("NAME", host.marker)
    stored = run(code.replace("MODE", "store"), backend=backend)
    read = run(code.replace("MODE", "read"), backend=backend)
    assert stored.exit_code == 0 and read.exit_code == 0, (stored, read)
    assert host.secret not in read.stdout, f"a key outlived its run: {read.stdout}"


def test_filesystem_churn_does_not_stretch_the_timeout(backend, host):
    """Two processes making directories as fast as they can: clean-up must stay bounded."""
    code = (
        "import os\nos.fork()\ni = 0\nwhile True:\n    try:\n"
        "        os.mkdir('m%d_%d' % (os.getpid(), i))\n    except OSError:\n        pass\n"
        "    i += 1\n"
    )
    started = time.monotonic()
    r = run(code, backend=backend, timeout_s=2)
    elapsed = time.monotonic() - started
    assert r.timed_out or r.killed_reason, r
    assert elapsed < 2 + 3, f"run(timeout_s=2) took {elapsed:.1f}s"


_PLANTER = r"""
import glob, os, sys, time
tmp, target, name = sys.argv[1:4]
until = time.monotonic() + float(sys.argv[4])
print('ready', flush=True)
i = 0
while time.monotonic() < until:
    i += 1      # the host temp dir often, every process's root now and then
    dirs = glob.glob(tmp + '/r1-sandbox-*/work')
    if i % 50 == 0:
        dirs += glob.glob('/proc/[0-9]*/root/tmp/work')
    for d in dirs:
        try:
            os.symlink(target, os.path.join(d, name))
        except OSError:
            pass
"""


def test_files_cannot_be_redirected_by_a_planted_symlink(backend, host):
    """A host process of the sandbox uid races `files=` to plant work/<name> -> a root-only
    file; the write must never land there (the host fixture checks the file)."""
    planter = subprocess.Popen(
        [
            *as_user(sandbox.SANDBOX_UID),
            SYSTEM_PYTHON,
            "-I",
            "-c",
            _PLANTER,
            tempfile.gettempdir(),
            str(host.root_only),
            "zz_last",
            "30",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert planter.stdout.readline() == "ready\n"
        files = {f"f{i:04d}": "x" for i in range(2000)} | {"zz_last": "PWNED"}
        for _ in range(3):
            r = run("print(open('zz_last').read())", files=files, backend=backend)
            assert r.ok and r.stdout == "PWNED\n", r
    finally:
        planter.kill()
        planter.wait()


_FINDER = r"""
import glob, os, subprocess, sys, time
tmp, until = sys.argv[1], time.monotonic() + float(sys.argv[2])
print('ready', flush=True)
while time.monotonic() < until:
    for p in glob.glob(tmp + '/r1-sandbox-*/work/id_planted') + glob.glob('/proc/[0-9]*/root/tmp/work/id_planted'):
        try:
            euid = subprocess.run([p, '-u'], capture_output=True, text=True, timeout=2).stdout
            print('RAN', p, 'euid', euid.strip(), flush=True)
        except OSError:
            pass
    time.sleep(0.01)
"""


def test_planted_setuid_binary_is_unreachable_and_inert(backend, host):
    """The code plants a 6755 copy of `id` in a 0777 work dir; another local user must not
    be able to reach it, and the work dir is nosuid anyway."""
    finder = subprocess.Popen(
        [*as_user(4321), SYSTEM_PYTHON, "-I", "-c", _FINDER, tempfile.gettempdir(), "4"],
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert finder.stdout.readline() == "ready\n"
        r = run(
            "import os, shutil, time\nshutil.copy('/usr/bin/id', 'id_planted')\n"
            "os.chmod('id_planted', 0o6755); os.chmod('.', 0o777)\n"
            "print('nosuid', bool(os.statvfs('.').f_flag & os.ST_NOSUID), flush=True)\n"
            "time.sleep(1.5)",
            backend=backend,
            timeout_s=4,
        )
        finder.terminate()
        found = finder.communicate(timeout=10)[0]
    finally:
        finder.kill()
        finder.wait()
    assert r.stdout == "nosuid True\n", r
    assert "RAN" not in found, f"another user ran the planted binary: {found}"


def test_forged_status_does_not_crash_the_tool(backend):
    out = sandbox.sandbox_tool(backend=backend)({"code": FORGE_STATUS, "timeout_s": 1})
    assert out.startswith("status: timed out") and "INJECTED" not in out


@pytest.mark.parametrize(
    "stream",
    [
        b"[1]\n",
        b'"exit"\n',
        b'{"event":"exit","status":"0"}\n',
        b'{"event":"exit","status":true}\n',
        b'{"event":"exit","status":99999999}\n',
        b'{"event":"exit","status":127}\n',
        b'{"event":"exit","status":0,"extra":1}\n',
        b'{"event":"ready","isolation":[1],"warnings":[]}\n',
        b'{"child-pid":"1"}\n',
        b'{"child-pid":5,"x":1}\n',
        b'{"event":"error","message":null}\n',
        b"\xff\xfe\n",
        b"[" * 100_000 + b"\n",
        b"x" * (sandbox.MAX_STATUS_BYTES + 1),
    ],
)
def test_status_reader_rejects_anything_malformed(stream):
    reader = sandbox._StatusReader()
    msgs = reader.feed(stream[:1000]) + reader.feed(stream[1000:])
    assert msgs == [] and reader.error is not None
    assert reader.feed(b'{"event":"exit","status":0}\n') == []  # nothing after an error


def test_status_reader_accepts_the_real_messages():
    reader = sandbox._StatusReader()
    lines = (
        b'{"child-pid": 7, "pid-namespace": 4026532}\n{"event": "ready", "isolation": '
        b'["net-ns"], "warnings": []}\n{"event": "exit", "status": 256}\n{"exit-code": 1}\n'
    )
    msgs = [m for i in range(0, len(lines), 5) for m in reader.feed(lines[i : i + 5])]
    assert reader.error is None and [m.get("event") for m in msgs] == [None, "ready", "exit", None]
    assert msgs[2]["status"] == 256 and msgs[0]["child-pid"] == 7


@pytest.fixture
def shm_path():
    """A scratch dir on tmpfs where there is one (rmdir on this disk costs ~3 ms)."""
    path = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_remove_tree_survives_deep_locked_trees_and_touches_nothing_outside(shm_path):
    tmp_path = shm_path
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    outside.chmod(0o640)
    base = tmp_path / "run"
    base.mkdir()
    os.symlink(outside, base / "link")
    fd = os.open(base, os.O_RDONLY)
    for _ in range(1100):  # deeper than the recursion and fd limits
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.chmod("d", 0, dir_fd=fd)  # locked after we hold it open
        os.close(fd)
        fd = nxt
    os.close(fd)
    mode = os.stat(tmp_path).st_mode
    assert not sandbox._remove_tree(base, budget_s=0.0)  # out of time: stops, no raise
    assert sandbox._remove_tree(base, budget_s=30)
    assert not base.exists() and outside.read_text() == "keep"
    assert stat.S_IMODE(outside.stat().st_mode) == 0o640 and os.stat(tmp_path).st_mode == mode


# ----------------------------------------------------------------------------- non-root

_NONROOT_DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sandbox_under_test", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod          # dataclasses look their module up
spec.loader.exec_module(mod)
# PATCH
try:
    r = mod.run(sys.argv[3], backend=sys.argv[2], timeout_s=3)
except RuntimeError as e:             # e.g. bwrap cannot work without user namespaces
    print(json.dumps({"unavailable": str(e)}))
    raise SystemExit(0)
print(json.dumps({"stdout": r.stdout, "stderr": r.stderr, "exit_code": r.exit_code,
                  "isolation": r.isolation, "warnings": r.warnings}))
"""


def _run_as_nobody(backend: str, code: str, patch: str = "") -> dict:
    sys_python = "/usr/bin/python3"
    if not ROOT or shutil.which("setpriv") is None or not os.path.exists(sys_python):
        pytest.skip("needs root, setpriv and a system python3 to impersonate a normal user")
    driver = _NONROOT_DRIVER.replace("# PATCH", patch)
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys_python,
            "-I",
            "-c",
            driver,
            str(Path(sandbox.__file__).resolve()),
            backend,
            code,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    if "unavailable" in r:
        pytest.skip(r["unavailable"])
    return r


_NET_PROBE = (
    "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
    "    print('CONNECTED')\nexcept OSError:\n    print('blocked')\n"
)


@pytest.mark.parametrize("nr_backend", BACKENDS)
def test_unprivileged_caller(nr_backend):
    """Started by a normal user, the sandbox still isolates the network (user namespaces)
    or says plainly in `warnings` that it could not."""
    r = _run_as_nobody(nr_backend, _NET_PROBE)
    assert r["exit_code"] == 0, r
    if "net-ns" in r["isolation"]:
        assert r["stdout"].startswith("blocked"), r
        assert "user-ns" in r["isolation"] or nr_backend == "bwrap"
    else:
        assert any("NO NETWORK ISOLATION" in w for w in r["warnings"]), r


def test_without_any_namespace_the_result_says_so():
    """Where user namespaces are refused, the code still runs but the result never pretends:
    its warnings name the missing network and filesystem isolation."""
    patch = (
        "src = mod._init_source().replace('self.libc.unshare(CLONE_NEWUSER) == 0', 'False')\n"
        "assert 'False' in src\n"
        "mod._init_source = lambda: src"
    )
    r = _run_as_nobody("native", _NET_PROBE, patch)
    assert r["exit_code"] == 0 and "net-ns" not in r["isolation"], r
    warnings = " ".join(r["warnings"])
    assert "NO NETWORK ISOLATION" in warnings and "no mount namespace" in warnings
    assert "user namespaces unavailable" in warnings
