"""tools/sandbox_init.py: the seccomp filter, the payload protocol and the file writer,
each on the real kernel and file system (the full sandbox is tested in test_sandbox.py)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tools import sandbox, sandbox_init

_SECCOMP_PROBE = """
import ctypes, json, os, subprocess, sys, threading
from tools import sandbox_init as si
arch = si.ARCHES[sys.argv[1]]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
assert libc.prctl(si.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
si.install_seccomp(libc, arch)

def errno_of(rc):
    return 0 if rc == 0 else ctypes.get_errno()

out = {
    "unshare_user": errno_of(libc.unshare(si.CLONE_NEWUSER)),
    "unshare_user_ns": errno_of(libc.unshare(si.CLONE_NEWUSER | si.CLONE_NEWNS)),
    "clone_user": errno_of(libc.syscall(arch.nr["clone"], si.CLONE_NEWUSER | 17, 0, 0, 0, 0)),
    "clone3": errno_of(libc.syscall(arch.nr["clone3"], None, 0)),
    "add_key": errno_of(libc.syscall(arch.nr["add_key"], b"user", b"r1-probe", b"x", 1, -4)),
    "keyctl": errno_of(libc.syscall(arch.nr["keyctl"], 0, -4, 0)),
    "unshare_uts": errno_of(libc.unshare(si.CLONE_NEWUTS)),   # allowed: we are root here
}
def socket_errno(family, kind=1):     # SOCK_STREAM (SOCK_DGRAM for netlink)
    fd = libc.syscall(arch.nr["socket"], family, kind, 0)
    if fd >= 0:
        os.close(fd)
        return 0
    return ctypes.get_errno()
out["memfd_create"] = errno_of(min(0, libc.syscall(arch.nr["memfd_create"], b"probe", 0)))
out["inotify_init1"] = errno_of(min(0, libc.syscall(arch.nr["inotify_init1"], 0)))
if "inotify_init" in arch.nr:
    out["inotify_init"] = errno_of(min(0, libc.syscall(arch.nr["inotify_init"])))
out["io_uring_setup"] = errno_of(min(0, libc.syscall(arch.nr["io_uring_setup"], 1, None)))
out["af_vsock"] = socket_errno(40)
out["af_alg"] = socket_errno(38, 5)
out["af_packet"] = socket_errno(17, 3)
out["af_unix"], out["af_inet"], out["af_inet6"] = socket_errno(1), socket_errno(2), socket_errno(10)
out["af_netlink"] = socket_errno(16, 2)
t = threading.Thread(target=lambda: out.__setitem__("thread", "ran"))
t.start(); t.join()
out["subprocess"] = subprocess.run(["true"]).returncode
out["fork"] = os.waitstatus_to_exitcode(os.waitpid(os.fork() or os._exit(7), 0)[1])
print(json.dumps(out))
"""


@pytest.mark.skipif(platform.machine() not in sandbox_init.ARCHES, reason="no filter for this arch")
def test_seccomp_denies_keyring_and_user_namespaces_but_not_threads_or_fork():
    proc = subprocess.run(
        [sys.executable, "-c", _SECCOMP_PROBE, platform.machine()], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    eperm, enosys = 1, 38
    assert out["unshare_user"] == out["unshare_user_ns"] == out["clone_user"] == eperm
    assert out["add_key"] == out["keyctl"] == eperm and out["clone3"] == enosys
    assert out["thread"] == "ran" and out["subprocess"] == 0 and out["fork"] == 7
    # issue 30: memfd memory escapes RLIMIT_AS; inotify sees the host's reads of the /etc bind;
    # AF_VSOCK is not covered by the network namespace (findings 6 and 12)
    assert out["memfd_create"] == out["inotify_init1"] == out.get("inotify_init", eperm) == eperm
    assert out["af_vsock"] == out["af_alg"] == out["af_packet"] == 97  # EAFNOSUPPORT
    assert out["io_uring_setup"] == enosys  # it could open any socket family without socket()
    assert out["af_unix"] == out["af_inet"] == out["af_inet6"] == out["af_netlink"] == 0
    if os.geteuid() == 0:
        assert out["unshare_uts"] == 0


def test_seccomp_program_jumps_stay_inside_the_program():
    for arch in sandbox_init.ARCHES.values():
        prog = sandbox_init.seccomp_program(arch)
        for i, (code, jt, jf, _) in enumerate(prog):
            if code & 0x07 == 0x05:  # BPF_JMP
                assert i + 1 + max(jt, jf) < len(prog)
        assert prog[-1][0] == sandbox_init.BPF_RET_K


def test_payload_round_trip():
    files = [("a.txt", b"hello"), ("sub/dir/b.bin", bytes(range(256))), ("empty", b"")]
    cfg = {"status_fd": 9, "env": {"LANG": "C.UTF-8"}}
    fd = sandbox._payload(cfg, "print('数')", files)
    try:
        assert sandbox_init.read_payload(fd) == (cfg, "print('数')", files)
    finally:
        os.close(fd)


def test_write_files_never_follows_planted_links(tmp_path):
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "target").write_text("keep")
    os.symlink(outside / "target", work / "leaf")
    os.symlink(outside, work / "dir")
    with pytest.raises(FileExistsError):
        sandbox_init.write_files(str(work), [("leaf", b"PWNED")])
    with pytest.raises(OSError):
        sandbox_init.write_files(str(work), [("dir/new", b"PWNED")])
    with pytest.raises(ValueError):
        sandbox_init.write_files(str(work), [("a/../../escape", b"PWNED")])
    assert (outside / "target").read_text() == "keep"
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    sandbox_init.write_files(str(work), [("x/y/z.txt", b"ok"), ("x/w", b"ok2")])
    assert (work / "x/y/z.txt").read_bytes() == b"ok" and (work / "x/w").read_bytes() == b"ok2"
