"""The OPC UA simulator's config (``[[simulators]] type = "opcua"``), apart from
the simulator so that loading a config never imports asyncua."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from otgate.config.base import (
    Identifier,
    NonNegativeSeconds,
    PortOrZero,
    PositiveSeconds,
    StrictStruct,
)
from otgate.simulations.signals import Constant, SignalConfig, Sine

Probability = Annotated[float, msgspec.Meta(ge=0, le=1, description="probability, 0-1")]


class VarType(enum.Enum):
    DOUBLE = "double"
    FLOAT = "float"
    INT32 = "int32"
    INT64 = "int64"
    BOOLEAN = "boolean"
    STRING = "string"


class SimVariable(StrictStruct):
    """One simulated variable."""

    name: Identifier
    """Served as ``ns=2;s=<name>``."""
    signal: SignalConfig = Constant()
    """Signal model feeding the value (``kind = "sine"`` ...)."""
    type: VarType = VarType.DOUBLE
    """OPC UA data type; samples are converted (round for ints, str() for strings)."""
    writable: bool = False
    """Clients may write it (a setpoint): the signal gives only its initial
    value, afterwards it holds what was written."""


class OpcUaFaults(StrictStruct):
    """Fault injection."""

    restart_every_s: PositiveSeconds | None = None
    """Restart the server this often (None = never)."""
    restart_down_s: NonNegativeSeconds = 2.0
    """Seconds the server stays away during a restart."""
    slow_reply_s: NonNegativeSeconds = 0.0
    """Delay added to a slowed request."""
    slow_probability: Probability = 0.0
    """Share of requests delayed by ``slow_reply_s``."""
    bad_status_probability: Probability = 0.0
    """Share of samples served with ``bad_status`` instead of a value."""
    bad_status: str = "BadSensorFailure"
    """Name of the Bad status code served (any ``ua.StatusCodes`` name; checked
    when ``bad_status_probability`` > 0)."""

    def __post_init__(self) -> None:
        if self.bad_status_probability > 0:
            # Only then: importing asyncua takes ~0.2 s, which every command that
            # loads a config with an OPC UA simulator would otherwise pay.
            from asyncua import ua

            if not hasattr(ua.StatusCodes, self.bad_status):
                raise ValueError(f"unknown OPC UA status code {self.bad_status!r}")


class OpcUaSimConfig(StrictStruct):
    """An OPC UA server with simulated variables."""

    host: str = "127.0.0.1"
    """Address to bind."""
    port: PortOrZero = 0
    """Port to bind; 0 = ephemeral (kept across restarts)."""
    path: str = "/otgate/sim"
    """Endpoint path."""
    variables: list[SimVariable] = []
    """Simulated variables."""
    generate: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    """Extra generated sine variables ``gen00000``... (load tests, benches)."""
    update_interval: PositiveSeconds = 0.5
    """Seconds between signal updates."""
    faults: OpcUaFaults = OpcUaFaults()
    """Fault injection."""
    seed: int = 0
    """Seed of the signal and fault random generators."""

    def __post_init__(self) -> None:
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError("variable names must be unique")

    def all_variables(self) -> list[SimVariable]:
        gen = [
            SimVariable(
                name=f"gen{i:05d}",
                signal=Sine(amplitude=10.0, period_s=30.0 + i % 17, offset=50.0, phase=i * 0.1),
            )
            for i in range(self.generate)
        ]
        return list(self.variables) + gen
