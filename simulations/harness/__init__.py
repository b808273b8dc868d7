"""The "nothing lost" fault-injection harness (``otgate simulate --scenario``)."""
