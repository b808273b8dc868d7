"""Configuration from a control plane: pull, validate, apply, confirm or roll
back, report; the contract is in CONTROL_PLANE.md."""

from otgate.config.control_plane.config import ControlPlaneSection

__all__ = ["ControlPlaneSection"]
