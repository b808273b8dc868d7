"""The rows every protocol benchmark prints: the peer's own ceiling, the
gateway against it, and otgate's pure decode cost."""

from __future__ import annotations

from otgate.simulations.report import Report


def ceiling_and_gateway(
    report: Report,
    protocol: str,
    scenario: str,
    ceiling: tuple[str, float, float],
    gateway: tuple[str, float, float],
    goal: str,
) -> None:
    """``ceiling``/``gateway`` are (measure, points/s, µs CPU per point)."""
    (c_measure, c_pps, c_cpu), (g_measure, g_pps, g_cpu) = ceiling, gateway
    report.add(
        protocol=protocol,
        measure=c_measure,
        scenario=scenario,
        points_per_s=c_pps,
        cpu_us_per_point=c_cpu,
        ratio=1.0,
        goal="",
    )
    report.add(
        protocol=protocol,
        measure=g_measure,
        scenario=scenario,
        points_per_s=g_pps,
        cpu_us_per_point=g_cpu,
        ratio=g_pps / c_pps if c_pps else 0.0,
        goal=goal,
    )


def decode_only(report: Report, protocol: str, measure: str, decode_us: float) -> None:
    report.add(
        protocol=protocol,
        measure=measure,
        scenario="per point",
        points_per_s=1e6 / decode_us if decode_us else 0.0,
        cpu_us_per_point=decode_us,
        ratio="",
        goal="",
    )
