"""otgate works with MemoryDenyWriteExecute=yes (as set in systemd/otgate.service).

systemd enforces MemoryDenyWriteExecute with a seccomp filter: no mapping that
is writable and executable, no mprotect() adding PROT_EXEC. Linux >= 6.3 has
the same rule per process (prctl PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN), which
a test can switch on without systemd. A child Python process turns it on,
proves it is active (a W+X mmap is refused), then imports every otgate module
and the runtime dependencies and exercises the W+X-prone paths: a ctypes
callback (libffi closures), cryptography (OPC UA security), an SSL context,
multiprocessing (fork and spawn).

An import that fails under MDWE is retried without it: only a failure that
MDWE causes counts (a module someone is still writing is not this test's
business).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

UNSUPPORTED = 77

CHILD = textwrap.dedent(
    r"""
    import ctypes, importlib, json, mmap, pkgutil, sys, traceback

    enable = sys.argv[1] == "on"
    only = sys.argv[2:]
    result = {"imports": {}, "checks": {}}
    if enable:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
        if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            sys.exit(77)
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            result["mdwe_active"] = False
        except OSError:
            result["mdwe_active"] = True

    def modules():
        if only:
            return only
        import otgate
        names = [m.name for m in pkgutil.walk_packages(otgate.__path__, "otgate.",
                                                       onerror=lambda name: None)]
        deps = ["anyio", "msgspec", "aiohttp", "prometheus_client", "psutil", "aiokafka",
                "fastavro", "pymodbus", "serial", "asyncua", "aiomqtt", "tenacity",
                "psycopg", "cryptography", "thespian"]
        return names + [d for d in deps if importlib.util.find_spec(d) is not None]

    for name in modules():
        try:
            importlib.import_module(name)
            result["imports"][name] = None
        except BaseException as exc:
            result["imports"][name] = f"{type(exc).__name__}: {exc}"

    def check(label):
        def wrap(fn):
            try:
                fn()
                result["checks"][label] = None
            except BaseException:
                result["checks"][label] = traceback.format_exc(limit=3)
        return wrap

    def double(x):
        return 2 * x

    if not only:
        @check("ctypes_callback")
        def _():
            libc = ctypes.CDLL(None)
            cmp_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                     ctypes.POINTER(ctypes.c_int))
            arr = (ctypes.c_int * 4)(3, 1, 4, 2)
            libc.qsort(arr, 4, ctypes.sizeof(ctypes.c_int), cmp_t(lambda a, b: a[0] - b[0]))
            assert list(arr) == [1, 2, 3, 4]

        @check("cryptography_rsa")
        def _():
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding, rsa
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            sig = key.sign(b"otgate", padding.PKCS1v15(), hashes.SHA256())
            key.public_key().verify(sig, b"otgate", padding.PKCS1v15(), hashes.SHA256())

        @check("ssl_context")
        def _():
            import ssl
            ssl.create_default_context()

        for method in ("fork", "spawn"):
            @check(f"multiprocessing_{method}")
            def _():
                import multiprocessing
                with multiprocessing.get_context(method).Pool(1) as pool:
                    assert pool.map(double, [1, 2]) == [2, 4]

    print(json.dumps(result))
    """
)


def run_child(tmp_path, mode: str, only: list[str] | None = None) -> dict:
    script = tmp_path / "mdwe_child.py"
    script.write_text(CHILD)
    proc = subprocess.run(
        [sys.executable, str(script), mode, *(only or [])],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode == UNSUPPORTED:
        pytest.skip("kernel has no PR_SET_MDWE (Linux >= 6.3 needed)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_MDWE is Linux-only")
def test_otgate_runs_with_memory_deny_write_execute(tmp_path) -> None:
    result = run_child(tmp_path, "on")
    assert result["mdwe_active"], "PR_SET_MDWE accepted but a W+X mapping still worked"
    assert len(result["imports"]) > 10, result["imports"]

    failed = [name for name, error in result["imports"].items() if error]
    caused_by_mdwe = {}
    if failed:
        without = run_child(tmp_path, "off", failed)["imports"]
        caused_by_mdwe = {
            name: result["imports"][name] for name in failed if without.get(name) is None
        }
    assert caused_by_mdwe == {}, "fails only with MemoryDenyWriteExecute"

    checks = result["checks"]
    assert set(checks) == {
        "ctypes_callback",
        "cryptography_rsa",
        "ssl_context",
        "multiprocessing_fork",
        "multiprocessing_spawn",
    }
    broken = {label: error for label, error in checks.items() if error}
    assert broken == {}
