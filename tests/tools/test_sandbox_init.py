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
t = threading.Thread(target=lambda: out.__setitem__("thread", "ran"))
t.start(); t.join()
out["subprocess"] = subprocess.run(["true"]).returncode
out["fork"] = os.waitstatus_to_exitcode(os.waitpid(os.fork() or os._exit(7), 0)[1])
print(json.dumps(out))
"""


@pytest.mark.skipif(platform.machine() not in sandbox_init.ARCHES, reason="no filter for this arch")
def test_seccomp_denies_keyring_and_user_namespaces_but_not_threads_or_fork():
    proc = subprocess.run([sys.executable, "-c", _SECCOMP_PROBE, platform.machine()],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    eperm, enosys = 1, 38
    assert out["unshare_user"] == out["unshare_user_ns"] == out["clone_user"] == eperm
    assert out["add_key"] == out["keyctl"] == eperm and out["clone3"] == enosys
    assert out["thread"] == "ran" and out["subprocess"] == 0 and out["fork"] == 7
    if os.geteuid() == 0:
        assert out["unshare_uts"] == 0


def test_seccomp_program_jumps_stay_inside_the_program():
    for arch in sandbox_init.ARCHES.values():
        prog = sandbox_init.seccomp_program(arch)
        for i, (code, jt, jf, _) in enumerate(prog):
            if code & 0x07 == 0x05:               # BPF_JMP
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
