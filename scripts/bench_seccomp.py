"""What building a container's seccomp filter costs, measured on the host's
libseccomp itself (through ctypes: no headers, no compiler).

runc 1.1 builds the filter in `runc init` on every start: one
`seccomp_rule_add` per syscall name it can resolve on the native
architecture (a rule whose action is the default one is skipped), then
`seccomp_export_bpf`. This replays exactly those calls for an OCI config's
`linux.seccomp`, once with the config's architectures and once with the
native one alone, so the bench can say how the cost grows with them.
"""

import ctypes
import os
import statistics
import threading
import time

# libseccomp's constants (seccomp.h).
ACT_ALLOW = 0x7FFF0000
ACT_ERRNO = 0x00050000
ATTR_CTL_NNP = 3
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
       "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


class _Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _lib():
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_Cmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _action(name, errno):
    if name == "SCMP_ACT_ALLOW":
        return ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return ACT_ERRNO | ((1 if errno is None else errno) & 0xFFFF)
    raise ValueError(f"bench_seccomp: action {name} not handled")


def _read_all(fd, into):
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        into.append(chunk)


def build_once(lib, seccomp):
    """(rules added, ms to add them, ms to export the program, instructions)."""
    default = _action(seccomp["defaultAction"], seccomp.get("defaultErrnoRet"))
    f = lib.seccomp_init(default)
    if not f:
        raise RuntimeError("seccomp_init failed")
    try:
        for arch in seccomp.get("architectures", []):
            # SCMP_ARCH_X86_64 is "x86_64" to libseccomp's resolver.
            token = arch.removeprefix("SCMP_ARCH_").lower().encode()
            # An architecture already in the filter (the native one) is EEXIST: fine.
            lib.seccomp_arch_add(f, lib.seccomp_arch_resolve_name(token))
        lib.seccomp_attr_set(f, ATTR_CTL_NNP, 0)
        t0 = time.perf_counter()
        added = 0
        for rule in seccomp.get("syscalls", []):
            act = _action(rule["action"], rule.get("errnoRet"))
            if act == default:
                continue
            args = rule.get("args") or []
            cmps = (_Cmp * max(1, len(args)))(*[
                _Cmp(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0)) for a in args])
            for name in rule["names"]:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr < 0:
                    continue
                rc = lib.seccomp_rule_add_array(f, act, nr, len(args), cmps)
                if rc != 0:
                    raise RuntimeError(f"seccomp_rule_add {name}: {rc}")
                added += 1
        t1 = time.perf_counter()
        r, w = os.pipe()
        chunks = []
        reader = threading.Thread(target=_read_all, args=(r, chunks))
        reader.start()
        rc = lib.seccomp_export_bpf(f, w)
        os.close(w)
        reader.join()
        os.close(r)
        t2 = time.perf_counter()
        if rc != 0:
            raise RuntimeError(f"seccomp_export_bpf: {rc}")
        return added, (t1 - t0) * 1000, (t2 - t1) * 1000, sum(len(c) for c in chunks) // 8
    finally:
        lib.seccomp_release(f)


def measure(seccomp, runs=15):
    """Medians for the config's architectures and for the first one alone:
    {label: dict(arches, rules, add_ms, export_ms, insns)}."""
    lib = _lib()
    arches = seccomp.get("architectures", [])
    out = {}
    for label, subset in (("all", arches), ("native", arches[:1])):
        s = dict(seccomp, architectures=subset)
        samples = [build_once(lib, s) for _ in range(runs)]
        out[label] = dict(arches=subset, rules=samples[0][0], insns=samples[0][3],
                          add_ms=statistics.median(x[1] for x in samples),
                          export_ms=statistics.median(x[2] for x in samples))
    return out
