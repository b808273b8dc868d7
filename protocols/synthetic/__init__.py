"""A synthetic source: readings from signal models, no device needed."""

from otgate.protocols.synthetic.config import SyntheticAdapter

__all__ = ["SyntheticAdapter"]
