"""Run a command under systemd's MemoryDenyWriteExecute=yes, as systemd 252 applies it.

    python -m tests.deploy.mdwe PROGRAM [ARG...]

installs the seccomp filter systemd installs for MemoryDenyWriteExecute=yes (its
``seccomp_memory_deny_write_execute``: mmap with PROT_WRITE and PROT_EXEC together,
mprotect/pkey_mprotect adding PROT_EXEC and shmat with SHM_EXEC fail with EPERM), then execs
PROGRAM, which inherits it. Built with libseccomp through ctypes; exit 69 if it is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_CMP_MASKED_EQ = 7
SHM_EXEC = 0o100000
PROT = 2  # the argument index of prot (mmap, mprotect, pkey_mprotect) and shmflg (shmat)
RULES = (
    (b"mmap", mmap.PROT_WRITE | mmap.PROT_EXEC),
    (b"mprotect", mmap.PROT_EXEC),
    (b"pkey_mprotect", mmap.PROT_EXEC),
    (b"shmat", SHM_EXEC),
)


class _ArgCmp(ctypes.Structure):
    _fields_ = (("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64))


def library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp")
    return None if name is None else ctypes.CDLL(name, use_errno=True)


def deny_write_execute(lib: ctypes.CDLL) -> None:
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp))
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        for name, mask in RULES:
            number = lib.seccomp_syscall_resolve_name(name)
            rule = _ArgCmp(PROT, SCMP_CMP_MASKED_EQ, mask, mask)
            status = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO | errno.EPERM, number, 1,
                                                ctypes.byref(rule))
            if status != 0:
                raise OSError(-status, f"seccomp_rule_add_array({name.decode()})")
        status = lib.seccomp_load(ctx)
        if status != 0:
            raise OSError(-status, "seccomp_load")
    finally:
        lib.seccomp_release(ctx)


def main(argv: list[str]) -> int:
    lib = library()
    if lib is not None:
        deny_write_execute(lib)
        os.execv(argv[0], argv)  # the program inherits the filter
    print("libseccomp is not installed", file=sys.stderr)
    return 69


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
