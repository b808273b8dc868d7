"""Build the configured log backend, its schema store and the publisher.

``make_log`` only constructs (no I/O); ``open_log`` starts the backend and
creates the topic set (``topics.topic_specs``). Relative paths in the config
are relative to the gateway's state dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from otgate.actors.log.config import Backend, LogConfig
from otgate.actors.log.embedded import EmbeddedLog
from otgate.actors.log.publisher import Codec, Decoder, ReadingPublisher
from otgate.actors.log.retention import Retention, event_writer
from otgate.actors.log.schemas import EmbeddedSchemaStore, RegistrySchemaStore, SchemaStore
from otgate.actors.log.topics import topic_specs


def resolve(state_dir: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(state_dir) / p


def make_log(cfg: LogConfig, state_dir: Path) -> Any:
    """The backend object for ``cfg`` (not started)."""
    if cfg.backend is Backend.KAFKA:
        from otgate.actors.log.kafka import KafkaLog  # aiokafka: ~45 ms to import

        return KafkaLog(
            cfg.bootstrap_servers,
            idempotence=cfg.idempotence,
            compression=cfg.compression.value,
            linger_ms=cfg.linger_ms,
            max_batch_bytes=cfg.max_batch_bytes,
            request_timeout_s=cfg.request_timeout_s,
            client_id=cfg.client_id,
            replication_factor=cfg.replication_factor,
        )
    return EmbeddedLog(resolve(state_dir, cfg.path), busy_timeout_s=cfg.busy_timeout_s)


async def open_log(cfg: LogConfig, state_dir: Path, *, create_topics: bool = True) -> Any:
    """The started backend, with every topic of the topic set present."""
    log = make_log(cfg, state_dir)
    await log.start()
    try:
        if create_topics:
            await log.ensure_topics(topic_specs(cfg))
    except BaseException:
        await log.close()
        raise
    return log


def schema_store(cfg: LogConfig, state_dir: Path, log: Any) -> SchemaStore:
    """The embedded schema table (embedded backend, no registry) or the
    registry client with its disk cache."""
    if cfg.registry_url is None and isinstance(log, EmbeddedLog):
        return EmbeddedSchemaStore(log)
    return RegistrySchemaStore(
        cfg.registry_url, resolve(state_dir, cfg.schema_cache), timeout_s=cfg.registry_timeout_s
    )


async def open_publisher(cfg: LogConfig, state_dir: Path, log: Any) -> ReadingPublisher:
    """A started ``ReadingPublisher`` on ``log`` (schemas registered or cached)."""
    pub = ReadingPublisher(log, schema_store(cfg, state_dir, log))
    await pub.start()
    return pub


def decoder(cfg: LogConfig, state_dir: Path, log: Any) -> Decoder:
    return Decoder(schema_store(cfg, state_dir, log))


async def open_retention(cfg: LogConfig, state_dir: Path, log: Any) -> Retention | None:
    """The retention / disk-tier task of an embedded log (run ``.run`` in one
    process's task group; other writer processes run ``DiskGuard``). None for
    Kafka: the broker applies retention itself."""
    if not isinstance(log, EmbeddedLog):
        return None
    codec = Codec(schema_store(cfg, state_dir, log))
    await codec.prepare("logs.gateway")
    return Retention(log, cfg, emit=event_writer(log, codec))
