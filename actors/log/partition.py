"""Key -> partition, the same way on both backends (Kafka's murmur2 default
partitioner), so an asset lands in the same partition number everywhere."""

from __future__ import annotations

import itertools

_cache: dict[tuple[bytes, int], int] = {}
_round_robin = itertools.count()


def partition_for(key: bytes | None, partitions: int) -> int:
    """Partition of ``key`` among ``partitions`` (keyless records round-robin)."""
    if partitions == 1:
        return 0
    if key is None:
        return next(_round_robin) % partitions
    p = _cache.get((key, partitions))
    if p is None:
        # Imported here: aiokafka takes ~45 ms to import, which the log's readers
        # (``otgate log``) never need; the cache makes this a rare path.
        from aiokafka.partitioner import murmur2

        if len(_cache) > 100_000:
            _cache.clear()
        p = _cache[(key, partitions)] = (murmur2(key) & 0x7FFFFFFF) % partitions
    return p
