"""The inside of `tools/sandbox.py`: builds the sandbox, then runs the user's code in it.

Standard library only, so that it runs in a bare bwrap tree. The host starts it as
``python -I -S -c <this file's source> <stage>`` and sends everything else on stdin, a
sealed memfd: one JSON line ``{"cfg": ..., "code": ..., "files": [[name, size], ...]}``
followed by the files' bytes. Nothing of the configuration (host paths included) appears
in argv, which every process can read from /proc/<pid>/cmdline.

Stage ``outer`` (native backend) makes the namespaces and forks ``init``; under bwrap,
bwrap made them and runs ``init`` directly as pid 1. ``init`` builds the file tree (native
only), drops privileges, installs the seccomp filter, creates the work dir on the
sandbox's own tmpfs and writes the files there with the sandbox's credentials, then forks
the user's interpreter with every descriptor but 0/1/2 closed. Each message to the host is
one JSON line on the status pipe, which the user's code never holds.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import signal
import sys
from dataclasses import dataclass, field

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 38
SYS_mount_setattr, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
SYSTEM_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
INODES_PER_TMPFS = 16384  # bounds the kernel memory (and teardown time) of a tmpfs
UNSET_LOGINUID = 4294967295  # (uid_t)-1 in /proc/<pid>/loginuid


@dataclass(frozen=True)
class Arch:
    """Syscall numbers the seccomp filter and pivot_root need, per architecture."""

    audit: int  # AUDIT_ARCH_* value seccomp reports
    nr: dict[str, int]
    x32_bit: int = 0  # x86-64: syscalls with this bit set are the x32 ABI


ARCHES = {
    "x86_64": Arch(
        0xC000003E,
        {
            "clone": 56,
            "unshare": 272,
            "clone3": 435,
            "add_key": 248,
            "request_key": 249,
            "keyctl": 250,
            "pivot_root": 155,
            "memfd_create": 319,
            "socket": 41,
            "inotify_init": 253,
            "inotify_init1": 294,
            "io_uring_setup": 425,
        },
        x32_bit=0x40000000,
    ),
    "aarch64": Arch(
        0xC00000B7,
        {
            "clone": 220,
            "unshare": 97,
            "clone3": 435,
            "add_key": 217,
            "request_key": 218,
            "keyctl": 219,
            "pivot_root": 41,
            "memfd_create": 279,
            "socket": 198,
            "inotify_init1": 26,
            "io_uring_setup": 425,
        },
    ),
}
# Socket families the code may open: the network namespace isolates exactly these. Others
# (AF_VSOCK reaches the hypervisor or host whatever the namespace; AF_ALG, AF_PACKET, ...)
# are refused with EAFNOSUPPORT, as a kernel without them would.
SOCKET_FAMILIES = (1, 2, 10, 16)  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK

# --- seccomp -------------------------------------------------------------------------
# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ERRNO, SECCOMP_RET_ALLOW = 0x80000000, 0x50000, 0x7FFF0000
EPERM, ENOSYS, EAFNOSUPPORT = 1, 38, 97


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


def seccomp_program(arch: Arch) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) instructions that deny the kernel keyring (add_key, request_key,
    keyctl: keys would outlive the run in uid 65534's user keyring), new user namespaces
    (unshare/clone with CLONE_NEWUSER; clone3, whose flags BPF cannot read, gets ENOSYS so
    libc falls back to clone), memfd_create (its memory is not counted by RLIMIT_AS),
    inotify (it would see the host's own reads of the read-only /etc and /usr binds) and
    sockets outside SOCKET_FAMILIES (io_uring, which could open them without a socket()
    call, gets ENOSYS). A nested user namespace would let the code mount a tmpfs
    that no rlimit counts. Other architectures' syscalls (i386 on x86-64, x32) are killed."""
    deny, nosys = SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_ERRNO | ENOSYS
    # Built back to front so every jump is a forward offset to a known instruction.
    families = [(BPF_LD_W_ABS, 0, 0, 16)]  # socket(): args[0] = family
    for i, family in enumerate(SOCKET_FAMILIES):
        families.append((BPF_JEQ_K, len(SOCKET_FAMILIES) - i, 0, family))
    families += [(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EAFNOSUPPORT), (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)]
    tail = [
        (BPF_LD_W_ABS, 0, 0, 16),  # args[0], low 32 bits
        (BPF_JSET_K, 0, 1, CLONE_NEWUSER),
        (BPF_RET_K, 0, 0, deny),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ] + families
    body: list[tuple[int, int, int, int]] = [(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)]
    # socket jumps past the flag check to `families`; clone and unshare to the flag check.
    body.insert(0, (BPF_JEQ_K, len(body) + 4, 0, arch.nr["socket"]))
    for name in ("clone", "unshare"):
        body.insert(0, (BPF_JEQ_K, len(body), 0, arch.nr[name]))
    returns = {
        "clone3": nosys,
        "add_key": deny,
        "request_key": deny,
        "keyctl": deny,
        "memfd_create": deny,
        "inotify_init1": deny,
        "io_uring_setup": nosys,
    }
    if "inotify_init" in arch.nr:  # aarch64 has only inotify_init1
        returns["inotify_init"] = deny
    for name, ret in returns.items():
        body[0:0] = [(BPF_JEQ_K, 0, 1, arch.nr[name]), (BPF_RET_K, 0, 0, ret)]
    head = [
        (BPF_LD_W_ABS, 0, 0, 4),  # arch
        (BPF_JEQ_K, 1, 0, arch.audit),
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (BPF_LD_W_ABS, 0, 0, 0),
    ]  # nr
    if arch.x32_bit:
        head += [(BPF_JGE_K, 0, 1, arch.x32_bit), (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS)]
    return head + body + tail


def install_seccomp(libc: ctypes.CDLL, arch: Arch) -> None:
    """Install `seccomp_program` on this thread and every later child (needs NO_NEW_PRIVS)."""
    prog = seccomp_program(arch)
    filters = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), filters)
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


# --- helpers -------------------------------------------------------------------------


def check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, what + ": " + os.strerror(e))


def read_payload(fd: int) -> tuple[dict, str, list[tuple[str, bytes]]]:
    """(cfg, code, files) from the host's memfd on `fd`."""
    with os.fdopen(os.dup(fd), "rb") as f:
        header = json.loads(f.readline())
        files = []
        for name, size in header["files"]:
            data = f.read(size)
            if len(data) != size:
                raise ValueError("payload truncated at " + name)
            files.append((name, data))
    return header["cfg"], header["code"], files


def write_files(workdir: str, files: list[tuple[str, bytes]]) -> None:
    """Write `files` below `workdir`, relative to directory fds and never through a symlink,
    so nothing planted in the tree can redirect a write. Runs with the sandbox's own
    credentials, so even a redirected write could reach only what the code itself could."""
    root = os.open(workdir, os.O_DIRECTORY | os.O_NOFOLLOW | os.O_RDONLY)
    try:
        for name, data in files:
            *parents, leaf = name.split("/")
            if any(p in ("", ".", "..") for p in (*parents, leaf)):
                raise ValueError("bad file name " + name)
            dfd = os.dup(root)
            try:
                for part in parents:
                    try:
                        os.mkdir(part, 0o755, dir_fd=dfd)
                    except FileExistsError:
                        pass
                    sub = os.open(part, os.O_DIRECTORY | os.O_NOFOLLOW | os.O_RDONLY, dir_fd=dfd)
                    os.close(dfd)
                    dfd = sub
                out = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
                with os.fdopen(out, "wb") as f:
                    f.write(data)
            finally:
                os.close(dfd)
    finally:
        os.close(root)


@dataclass
class Sandbox:
    """State of one sandbox start-up: config from the host, what was applied, what was not."""

    cfg: dict
    code: str
    files: list[tuple[str, bytes]]
    libc: ctypes.CDLL = field(default_factory=lambda: ctypes.CDLL(None, use_errno=True))
    isolation: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def emit(self, **msg: object) -> None:
        os.write(self.cfg["status_fd"], (json.dumps(msg) + "\n").encode())

    def mount(self, src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        def enc(s: str | None) -> bytes | None:
            return None if s is None else s.encode()

        check(self.libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), "mount " + target)

    def make_read_only(self, target: str) -> None:
        """Read-only, nosuid, nodev for `target` and every mount below it."""
        attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
        check(
            self.libc.syscall(SYS_mount_setattr, AT_FDCWD, target.encode(), AT_RECURSIVE, attr, 32),
            "mount_setattr " + target,
        )

    def tmpfs(self, target: str, size_mb: int, mode: str, flags: int = 0) -> None:
        self.mount(
            "tmpfs",
            target,
            "tmpfs",
            MS_NOSUID | MS_NODEV | flags,
            f"size={size_mb}m,nr_inodes={INODES_PER_TMPFS},mode={mode}",
        )

    # --- native backend: namespaces and file tree ------------------------------------

    def make_namespaces(self) -> None:
        if os.geteuid() != 0:
            uid, gid = os.getuid(), os.getgid()
            if self.libc.unshare(CLONE_NEWUSER) == 0:
                # Map our own ids (not 0): the exec'd code then holds no capabilities.
                for path, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                    with open("/proc/self/" + path, "w") as f:
                        f.write(text)
                self.isolation.append("user-ns")
            else:
                self.warnings.append(
                    f"user namespaces unavailable ({os.strerror(ctypes.get_errno())}): no namespaces at all"
                )
                return
        wanted = [
            ("mount-ns", CLONE_NEWNS),
            ("pid-ns", CLONE_NEWPID),
            ("net-ns", CLONE_NEWNET),
            ("ipc-ns", CLONE_NEWIPC),
            ("uts-ns", CLONE_NEWUTS),
        ]
        if self.libc.unshare(sum(f for _, f in wanted)) == 0:
            self.isolation.extend(n for n, _ in wanted)
            return
        for name, flag in wanted:
            if self.libc.unshare(flag) == 0:
                self.isolation.append(name)
            else:
                self.warnings.append(f"{name} unavailable: {os.strerror(ctypes.get_errno())}")

    def build_root(self, arch: Arch) -> None:
        """A fresh root like bwrap's: read-only system dirs, the interpreter, a minimal
        /dev, private /proc, /tmp and /dev/shm; then pivot into it and detach the host's
        tree, so neither its files nor its mount points stay reachable."""
        cfg = self.cfg
        self.mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates to the host
        prefix_fd = os.open(cfg["python_prefix"], os.O_PATH | os.O_DIRECTORY)
        new = "/tmp"  # staging mount point; hidden again by the pivot
        self.mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        for name in SYSTEM_DIRS:
            host, target = "/" + name, new + "/" + name
            if os.path.islink(host):
                os.symlink(os.readlink(host), target)
            elif os.path.isdir(host):
                os.mkdir(target)
                self.mount(host, target, None, MS_BIND | MS_REC)
                self.make_read_only(target)
        os.mkdir(new + "/tmp")
        self.tmpfs(new + "/tmp", cfg["tmp_mb"], "1777")
        inner_python = new + cfg["inner_python"]
        os.mkdir(inner_python)
        self.mount(f"/proc/self/fd/{prefix_fd}", inner_python, None, MS_BIND | MS_REC)
        self.make_read_only(inner_python)
        os.close(prefix_fd)
        os.mkdir(new + "/dev")
        self.mount("tmpfs", new + "/dev", "tmpfs", MS_NOSUID, "size=64k,mode=755")
        for name in DEV_NODES:
            if os.path.exists("/dev/" + name):
                os.close(os.open(new + "/dev/" + name, os.O_CREAT | os.O_WRONLY, 0o666))
                self.mount("/dev/" + name, new + "/dev/" + name, None, MS_BIND)
        for link, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(target, new + "/dev/" + link)
        os.mkdir(new + "/dev/shm")
        self.tmpfs(new + "/dev/shm", cfg["tmpfs_mb"], "1777")
        self.mount(None, new + "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID, "size=64k,mode=755")
        os.mkdir(new + "/proc")
        if "pid-ns" in self.isolation:  # before the pivot: proc needs a visible /proc
            self.mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            self.isolation.append("private-proc")
        else:
            self.mount("/proc", new + "/proc", None, MS_BIND | MS_REC)
        os.chdir(new)
        check(self.libc.syscall(arch.nr["pivot_root"], b".", b"."), "pivot_root")
        check(self.libc.umount2(b".", MNT_DETACH), "umount old root")  # the host's tree
        os.chdir("/")
        self.mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        self.hide_packages()
        self.isolation += ["minimal-root", "private-tmp"]

    def hide_packages(self) -> None:
        """Cover third-party package dirs with empty read-only tmpfs: only the standard
        library imports, even when the code adds them to sys.path."""
        for path in self.cfg["package_dirs"]:
            if os.path.isdir(path):
                self.mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,nr_inodes=16,mode=755")

    # --- both backends ---------------------------------------------------------------

    def pin_loginuid(self) -> None:
        """Set the audit login uid to the sandbox uid. While it is unset, any process may set
        it once (no capability needed), so the code could claim uid 0 in audit records; once
        set, changing it needs CAP_AUDIT_CONTROL, which the code never has. Already set (a
        login session's), it stays as it is: the code cannot change that either."""
        try:
            with open("/proc/self/loginuid", "r+") as f:
                if f.read().strip() == str(UNSET_LOGINUID):
                    f.seek(0)
                    f.write(str(self.cfg["uid"]))
        except FileNotFoundError:  # a kernel without audit: nothing to spoof
            return
        except PermissionError:  # immutable login uids: the code cannot set it either
            return
        except OSError as exc:
            self.warnings.append(f"audit login uid left unset ({exc.strerror}): the code may set it")
            return
        self.isolation.append("loginuid")

    def init(self, arch: Arch | None) -> None:
        """Pid 1 of the sandbox: isolate, drop privileges, run the code, report its status."""
        cfg, libc = self.cfg, self.libc
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if cfg["stage"] == "outer":
            if "mount-ns" in self.isolation and arch is not None:
                self.build_root(arch)
            else:  # no private tree: run from the host paths, /tmp and / stay shared
                self.warnings.append(
                    f"no mount namespace: the code sees and may write the host filesystem wherever uid {cfg['uid']} may"
                )
                cfg.update(exe=cfg["host_exe"], workdir=cfg["host_workdir"])
                cfg["env"].update(
                    HOME=cfg["host_workdir"], TMPDIR=cfg["host_workdir"], LD_LIBRARY_PATH=cfg["python_prefix"] + "/lib"
                )
        for path in cfg.get("cap_inodes", ()):  # bwrap's tmpfs mounts: no inode cap of their own
            self.mount(None, path, None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"nr_inodes={INODES_PER_TMPFS}")
        self.pin_loginuid()  # before the uid change, which makes /proc/self root's
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(cfg["gid"])
            os.setuid(cfg["uid"])
            self.isolation.append(f"uid {cfg['uid']}")
        # Changing credentials cleared the parent-death signal; without it a killed bwrap
        # (which runs us in a new session, outside the host's kill group) would leave us.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # keeps /proc/1/* (our fds) away from the code
        if arch is None:
            self.warnings.append(
                f"no seccomp filter for {platform.machine()}: the kernel keyring and nested "
                "user namespaces stay reachable"
            )
        else:
            install_seccomp(libc, arch)
            self.isolation.append("seccomp")
        # The work dir is created and filled by the sandbox uid itself, after the drop.
        os.mkdir(cfg["workdir"], 0o700)
        write_files(cfg["workdir"], self.files)
        self.files = []
        for name, (soft, hard) in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        os.chdir(cfg["workdir"])
        self.emit(event="ready", isolation=self.isolation, warnings=self.warnings)
        child = os.fork()
        if child == 0:
            try:
                os.closerange(3, 1 << 20)  # the status pipe and anything else inherited
                os.execve(cfg["exe"], [cfg["exe"], "-I", "-S", "-c", self.code], cfg["env"])
            finally:
                os.write(2, b"sandbox: exec of the interpreter failed\n")
                os._exit(127)
        while True:  # reap orphans too; we are their reaper in our pid namespace
            pid, status = os.waitpid(-1, 0)
            if pid == child:
                break
        self.emit(event="exit", status=status)
        os._exit(0)


def main() -> None:
    # Default SIGINT: no KeyboardInterrupt traceback, and as pid 1 of a pid namespace a
    # default disposition makes us immune to SIGINT sent from inside.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    stage = sys.argv[1]
    cfg, code, files = read_payload(0)
    devnull = os.open(os.devnull, os.O_RDONLY)  # the code reads an empty stdin
    os.dup2(devnull, 0)
    os.close(devnull)
    box = Sandbox({**cfg, "stage": stage}, code, files, isolation=list(cfg.get("isolation", [])))
    try:
        arch = ARCHES.get(platform.machine())
        if stage == "init":
            box.init(arch)
        box.make_namespaces()
        pid = os.fork()
        if pid == 0:
            box.init(arch)
        box.emit(**{"child-pid": pid})  # the same message bwrap's --json-status-fd sends
        _, status = os.waitpid(pid, 0)
        os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 125)
    except BaseException as exc:
        try:
            box.emit(event="error", message=f"{type(exc).__name__}: {exc}")
        except OSError:
            pass
        os._exit(125)


if __name__ == "__main__":
    main()
