"""Unit tests for the simulators' signal models (simulations/signals.py)."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from otgate.simulations.signals import (
    Constant,
    Ramp,
    RandomWalk,
    Sine,
    States,
    Step,
    Toggle,
    decode_signal,
    make_signal,
)


def test_deterministic_shapes() -> None:
    assert make_signal(Constant(value=3.0))(10.0) == 3.0
    sine = make_signal(Sine(amplitude=2.0, period_s=4.0, offset=10.0))
    assert sine(1.0) == pytest.approx(12.0)
    assert sine(3.0) == pytest.approx(8.0)
    ramp = make_signal(Ramp(start=1.0, rate_per_s=2.0, span=10.0))
    assert ramp(2.0) == pytest.approx(5.0)
    assert ramp(5.5) == pytest.approx(2.0)  # wrapped after 5 s
    step = make_signal(Step(levels=[1.0, 2.0, 3.0], hold_s=1.0))
    assert [step(t) for t in (0.1, 1.1, 2.1, 3.1)] == [1.0, 2.0, 3.0, 1.0]
    toggle = make_signal(Toggle(on_s=1.0, off_s=2.0))
    assert [toggle(t) for t in (0.5, 2.5, 3.5)] == [False, True, False]


def test_noise_clamp_and_seed_reproducible() -> None:
    cfg = RandomWalk(start=0.0, step=5.0, min=-1.0, max=1.0)
    a, b = make_signal(cfg, seed=7), make_signal(cfg, seed=7)
    xs = [a(t) for t in range(50)]
    assert xs == [b(t) for t in range(50)]
    assert all(-1.0 <= x <= 1.0 for x in xs)
    noisy = make_signal(Constant(value=5.0, noise=1.0), seed=3)
    vals = [noisy(t) for t in range(200)]
    assert len(set(vals)) > 100
    assert 4.5 < sum(vals) / len(vals) < 5.5


def test_states_change_and_stay_in_set() -> None:
    s = make_signal(States(states=[0, 1, 2], mean_dwell_s=1.0), seed=1)
    seen = [s(t * 0.5) for t in range(200)]
    assert set(seen) == {0, 1, 2}
    assert sum(1 for x, y in itertools.pairwise(seen) if x != y) > 10


def test_decode_refuses_unknown_fields_and_bad_values() -> None:
    assert isinstance(decode_signal({"kind": "step", "levels": [1, 2]}), Step)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode_signal({"kind": "sine", "amp": 1})
    with pytest.raises(msgspec.ValidationError):
        decode_signal({"kind": "sine", "period_s": 0})
    with pytest.raises(msgspec.ValidationError, match="min"):
        decode_signal({"kind": "constant", "min": 2, "max": 1})
