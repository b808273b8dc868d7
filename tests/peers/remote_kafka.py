"""Reading back what the Kafka replication sink wrote to a remote (tansu) cluster."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer


@dataclass(frozen=True)
class Replica:
    partition: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: dict[str, bytes]

    @property
    def source(self) -> str:
        return self.headers["otgate-source"].decode()


async def read_remote(bootstrap: str, topic: str, want_unique: int,
                      deadline_s: float = 20.0, **client: Any) -> list[Replica]:
    """Every record of ``topic`` in partition order, once ``want_unique`` distinct
    sources are there (or the deadline passed); fetches, never trusts end_offsets.
    ``client``: more AIOKafkaConsumer arguments (TLS)."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                         auto_offset_reset="earliest", enable_auto_commit=False, **client)
    await c.start()
    out: list[Replica] = []
    try:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            got = await c.getmany(timeout_ms=300)
            for tp, recs in got.items():
                out += [Replica(tp.partition, r.key, r.value, r.timestamp,
                                {k: bytes(v) for k, v in r.headers}) for r in recs]
            if len({r.source for r in out}) >= want_unique and not got:
                break
    finally:
        await c.stop()
    return out


def dedupe(replicas: list[Replica]) -> list[Replica]:
    """What a remote consumer keeps: the first record of each (gateway, source)."""
    seen: set[tuple[bytes, bytes]] = set()
    out = []
    for r in replicas:
        k = (r.headers["otgate-gateway"], r.headers["otgate-source"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out
