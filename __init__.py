"""otgate: an edge runtime for industrial PCs that never loses a reading."""

__version__ = "0.1.0"
