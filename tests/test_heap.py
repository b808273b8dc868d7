"""``heap.trim``: the free pages among live chunks go back to the kernel."""

from __future__ import annotations

import pytest

from otgate.actors import heap

MIB = 2**20


@pytest.mark.skipif(heap._malloc_trim is None, reason="not glibc")
def test_trim_returns_the_free_pages_among_live_chunks() -> None:
    # 48 MiB of 1 KiB blocks (past pymalloc's 512 B: glibc's heap), then all but
    # one block in 64 freed: no page at the top of the heap is free, so free()
    # cannot give them back; most pages between the survivors are free
    blocks = [bytes([i % 251]) * 1024 for i in range(48 * 1024)]
    kept = blocks[::64]
    blocks.clear()
    before = heap.rss_bytes()
    released = heap.trim()
    assert released > 24 * MIB, (before / MIB, released / MIB)
    assert heap.rss_bytes() < before - 24 * MIB
    assert len(kept) == 768 and kept[1][0] == 64 % 251  # the survivors are intact
