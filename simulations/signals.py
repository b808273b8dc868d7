"""Signal models that feed the device simulators: constants, sines, ramps,
steps, noise, random walks and discrete state changes.

A signal is configured as a tagged msgspec Struct (``kind = "sine"`` ...) and
turned into a sampler with ``make_signal(cfg, seed=...)``. A sampler is called
with the simulation time in seconds (monotonic, starting near 0) and returns a
float (or an int for ``states`` / a bool for ``toggle``). Samplers are
deterministic for a given seed and sequence of times, so a test can predict
what a simulator serves. Stateful samplers (random walk, states, toggle)
assume non-decreasing times; an earlier time returns the current value.

Every continuous signal accepts ``noise`` (standard deviation of added
gaussian noise, 0 = none) and optional ``min``/``max`` clamps.

Usage::

    from otgate.simulations.signals import Sine, make_signal
    s = make_signal(Sine(amplitude=5.0, period_s=60.0, offset=20.0), seed=1)
    value = s(12.5)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Annotated

import msgspec

from otgate.config.base import StrictStruct

Sample = float | int | bool
Sampler = Callable[[float], Sample]

_Std = Annotated[float, msgspec.Meta(ge=0, description="standard deviation, >= 0")]
_Period = Annotated[float, msgspec.Meta(gt=0, description="seconds, > 0")]


class _Continuous(StrictStruct, kw_only=True, frozen=True):
    noise: _Std = 0.0
    """Standard deviation of gaussian noise added to every sample (0 = none)."""
    min: float | None = None
    """Clamp samples to at least this value (None = no clamp)."""
    max: float | None = None
    """Clamp samples to at most this value (None = no clamp)."""

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")


class Constant(_Continuous, tag="constant", tag_field="kind"):
    """A fixed value (plus optional noise)."""

    value: float = 0.0
    """The value served."""


class Sine(_Continuous, tag="sine", tag_field="kind"):
    """``offset + amplitude * sin(2*pi*(t/period_s) + phase)``."""

    amplitude: float = 1.0
    """Peak deviation from ``offset``."""
    period_s: _Period = 60.0
    """Seconds per full cycle."""
    offset: float = 0.0
    """Centre value."""
    phase: float = 0.0
    """Phase in radians."""


class Ramp(_Continuous, tag="ramp", tag_field="kind"):
    """A sawtooth: rises from ``start`` at ``rate_per_s``; wraps back to ``start``
    after ``span`` (0 = never wraps)."""

    start: float = 0.0
    """Value at t = 0."""
    rate_per_s: float = 1.0
    """Change per second (negative = falling)."""
    span: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Distance after which the ramp restarts at ``start``; 0 = unbounded."""


class Step(_Continuous, tag="step", tag_field="kind"):
    """Cycles through ``levels``, holding each for ``hold_s`` seconds."""

    levels: list[float] = msgspec.field(default_factory=lambda: [0.0, 1.0])
    """Values visited in order, then repeated."""
    hold_s: _Period = 10.0
    """Seconds each level is held."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.levels:
            raise ValueError("levels must not be empty")


class Noise(_Continuous, tag="noise", tag_field="kind"):
    """Gaussian noise around ``mean`` (the ``noise`` field is the std. deviation)."""

    mean: float = 0.0
    """Centre value."""


class RandomWalk(_Continuous, tag="random_walk", tag_field="kind"):
    """Brownian drift: each second the value moves by N(0, ``step``)."""

    start: float = 0.0
    """Value at t = 0."""
    step: _Std = 1.0
    """Standard deviation of the change per second."""


class States(StrictStruct, tag="states", tag_field="kind"):
    """A discrete state machine (e.g. a motor: 0 stopped, 1 running, 2 tripped).

    Dwell time in each state is exponential with mean ``mean_dwell_s``; the
    next state is chosen uniformly among the others.
    """

    states: list[int] = msgspec.field(default_factory=lambda: [0, 1])
    """The state codes served (first one is the initial state)."""
    mean_dwell_s: _Period = 30.0
    """Mean seconds spent in one state before changing."""

    def __post_init__(self) -> None:
        if not self.states:
            raise ValueError("states must not be empty")


class Toggle(StrictStruct, tag="toggle", tag_field="kind"):
    """A boolean that flips, e.g. an alarm bit: on for ``on_s``, off for ``off_s``."""

    on_s: _Period = 5.0
    """Seconds the bit is set in each cycle."""
    off_s: _Period = 55.0
    """Seconds the bit is clear in each cycle (the cycle starts clear)."""


SignalConfig = Constant | Sine | Ramp | Step | Noise | RandomWalk | States | Toggle
"""Any signal model; TOML/JSON select one with ``kind = "..."``."""


def make_signal(cfg: SignalConfig, *, seed: int | str | None = 0) -> Sampler:
    """Build the sampler ``t_seconds -> value`` for one signal config."""
    rng = random.Random(seed)
    if isinstance(cfg, States):
        return _states_sampler(cfg, rng)
    if isinstance(cfg, Toggle):
        cycle = cfg.on_s + cfg.off_s
        return lambda t: (t % cycle) >= cfg.off_s
    base = _base(cfg, rng)
    noise, lo, hi = cfg.noise, cfg.min, cfg.max
    if noise == 0 and lo is None and hi is None:
        return base

    def sample(t: float) -> float:
        v = base(t)
        if noise:
            v += rng.gauss(0.0, noise)
        if lo is not None and v < lo:
            v = lo
        if hi is not None and v > hi:
            v = hi
        return v

    return sample


def _base(cfg: SignalConfig, rng: random.Random) -> Callable[[float], float]:
    if isinstance(cfg, Constant):
        value = cfg.value
        return lambda t: value
    if isinstance(cfg, Noise):
        mean = cfg.mean
        return lambda t: mean
    if isinstance(cfg, Sine):
        w = 2 * math.pi / cfg.period_s
        a, off, ph = cfg.amplitude, cfg.offset, cfg.phase
        return lambda t: off + a * math.sin(w * t + ph)
    if isinstance(cfg, Ramp):
        start, rate, span = cfg.start, cfg.rate_per_s, cfg.span
        if span == 0 or rate == 0:
            return lambda t: start + rate * t
        period = span / abs(rate)
        return lambda t: start + rate * (t % period)
    if isinstance(cfg, Step):
        levels, hold = list(cfg.levels), cfg.hold_s
        return lambda t: levels[int(t // hold) % len(levels)]
    if isinstance(cfg, RandomWalk):
        return _walk(cfg, rng)
    raise TypeError(f"unknown signal config {type(cfg).__name__}")


def _walk(cfg: RandomWalk, rng: random.Random) -> Callable[[float], float]:
    state = {"t": 0.0, "v": cfg.start}
    step = cfg.step

    def sample(t: float) -> float:
        dt = t - state["t"]
        if dt > 0:
            state["v"] += rng.gauss(0.0, step * math.sqrt(dt))
            state["t"] = t
            if cfg.min is not None and state["v"] < cfg.min:
                state["v"] = cfg.min
            if cfg.max is not None and state["v"] > cfg.max:
                state["v"] = cfg.max
        return state["v"]

    return sample


def _states_sampler(cfg: States, rng: random.Random) -> Callable[[float], int]:
    states = list(cfg.states)
    cur = {"i": 0, "until": rng.expovariate(1.0 / cfg.mean_dwell_s)}

    def sample(t: float) -> int:
        while t >= cur["until"]:
            if len(states) > 1:
                nxt = rng.randrange(len(states) - 1)
                cur["i"] = nxt if nxt < cur["i"] else nxt + 1
            cur["until"] += rng.expovariate(1.0 / cfg.mean_dwell_s)
        return states[cur["i"]]

    return sample


def decode_signal(raw: dict) -> SignalConfig:
    """Validate a plain mapping (e.g. from TOML) into a signal config."""
    return msgspec.convert(raw, SignalConfig)
