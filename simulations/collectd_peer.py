"""collectd (Debian ``collectd-core``) as a C peer: its ``modbus`` read plugin
and its ``write_kafka`` output, run as a child process from a generated config.

``ensure_collectd`` apt-installs what is missing (collectd-core ships both
plugins; their libraries libmodbus5, librdkafka1 and libyajl2 are only
"Suggests"). ``librdkafka_dir`` works around a client bug: librdkafka before
2.2.0 mis-skips KIP-482 tagged fields (librdkafka PR #4278), and tansu's
ApiVersions v3 answer carries some, so Debian 12's librdkafka 2.0.2 never gets
past "ApiVersionRequest failed: Local: Read underflow". librdkafka keeps its
ABI (soname ``librdkafka.so.1``), so collectd's unchanged ``write_kafka.so``
is pointed at the newer copy bundled in the confluent-kafka wheel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

DEBIAN_NEEDS = (
    "collectd:collectd-core",
    "libmodbus.so.5:libmodbus5",
    "librdkafka.so.1:librdkafka1",
    "libyajl.so.2:libyajl2",
)
"""``ensure_debian`` specs (simulations/debian-deps.sh): tool or soname, package."""

PLUGIN_DIR = Path("/usr/lib/collectd")
TYPES_DB = Path("/usr/share/collectd/types.db")
FIXED_LIBRDKAFKA = (2, 2, 0)
"""First librdkafka that skips tagged fields correctly."""


def ensure_collectd() -> Path:
    """Install the Debian packages when missing; return the collectd binary."""
    deps = Path(__file__).with_name("debian-deps.sh")
    script = f'. "{deps}" && ensure_debian {" ".join(DEBIAN_NEEDS)}'
    subprocess.run(["bash", "-c", script], check=True, stdout=subprocess.DEVNULL)
    binary = shutil.which("collectd") or "/usr/sbin/collectd"
    for need in (Path(binary), PLUGIN_DIR / "modbus.so", PLUGIN_DIR / "write_kafka.so"):
        if not need.exists():
            raise RuntimeError(f"{need} missing after installing collectd-core")
    return Path(binary)


def collectd_version(binary: Path) -> str:
    """``5.12.0`` from ``collectd -h`` (its usage text ends with the version)."""
    out = subprocess.run([str(binary), "-h"], capture_output=True, text=True).stdout
    m = re.search(r"^collectd (\d+\.\d+\.\d+)", out, re.M)
    return m.group(1) if m else "?"


def librdkafka_version(path: str) -> tuple[int, int, int]:
    lib = ctypes.CDLL(path)
    v = lib.rd_kafka_version()  # 0xMMmmrrxx
    return (v >> 24) & 0xFF, (v >> 16) & 0xFF, (v >> 8) & 0xFF


def librdkafka_dir(tmp: Path) -> tuple[Path | None, str]:
    """(directory for LD_LIBRARY_PATH or None for the system's, description)."""
    system = ctypes.util.find_library("rdkafka") or "librdkafka.so.1"
    sv = librdkafka_version(system)
    if sv >= FIXED_LIBRDKAFKA:
        return None, "system librdkafka {}.{}.{}".format(*sv)
    spec = importlib.util.find_spec("confluent_kafka")
    found = []
    if spec and spec.submodule_search_locations:
        libs = Path(next(iter(spec.submodule_search_locations))).parent / "confluent_kafka.libs"
        found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        raise RuntimeError(
            "system librdkafka {}.{}.{} cannot read tansu's ApiVersions answer (fixed in 2.2.0) "
            "and no newer copy was found: pip install 'confluent-kafka>=2.2'".format(*sv)
        )
    lib_dir = tmp / "librdkafka"
    lib_dir.mkdir(exist_ok=True)
    link = lib_dir / "librdkafka.so.1"
    link.unlink(missing_ok=True)
    link.symlink_to(found[0])
    nv = librdkafka_version(str(found[0]))
    return lib_dir, "librdkafka {}.{}.{} (confluent-kafka wheel; system {}.{}.{})".format(*nv, *sv)


def collectd_config(
    *,
    tmp: Path,
    modbus_port: int,
    units: int,
    data: list[tuple[str, int, str, float]],
    interval: float,
    bootstrap: str,
    topic: str,
) -> str:
    """One Host (own connection) per unit; ``data`` = (name, register, RegisterType, scale)."""
    out = [
        f'Hostname "otgate-bench"\nFQDNLookup false\nBaseDir "{tmp}"\n'
        f'PIDFile "{tmp / "collectd.pid"}"\nPluginDir "{PLUGIN_DIR}"\nTypesDB "{TYPES_DB}"\n'
        f"Interval {interval}\nReadThreads {units}\nWriteThreads 2\n"
        'LoadPlugin logfile\n<Plugin logfile>\n  LogLevel info\n  File stderr\n</Plugin>\n'
        "LoadPlugin modbus\nLoadPlugin write_kafka\n<Plugin modbus>\n"
    ]
    for name, register, rtype, scale in data:
        out.append(
            f'  <Data "{name}">\n    RegisterBase {register}\n    RegisterType {rtype}\n'
            f'    RegisterCmd ReadHolding\n    Type gauge\n    Instance "{name}"\n'
            f"    Scale {scale}\n  </Data>\n"
        )
    collect = "".join(f'      Collect "{name}"\n' for name, *_ in data)
    for u in range(1, units + 1):
        out.append(
            f'  <Host "dev{u}">\n    Address "127.0.0.1"\n    Port "{modbus_port}"\n'
            f'    Interval {interval}\n    <Slave {u}>\n      Instance "asset{u}"\n'
            f"{collect}    </Slave>\n  </Host>\n"
        )
    # the same producer settings as otgate's Kafka log: acks=all, linger 5 ms
    out.append(
        "</Plugin>\n<Plugin write_kafka>\n"
        f'  Property "metadata.broker.list" "{bootstrap}"\n  Property "linger.ms" "5"\n'
        f'  <Topic "{topic}">\n    Format JSON\n    Property "acks" "all"\n  </Topic>\n</Plugin>\n'
    )
    return "".join(out)


class CollectdProcess:
    """``collectd -f -C FILE`` as a child process, stopped by its PID."""

    def __init__(self, binary: Path, config: Path, lib_dir: Path | None) -> None:
        self.binary = binary
        self.config = config
        self.lib_dir = lib_dir
        self.log_path = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CollectdProcess:
        env = dict(os.environ)
        if self.lib_dir is not None:
            env["LD_LIBRARY_PATH"] = str(self.lib_dir)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "-f", "-C", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
