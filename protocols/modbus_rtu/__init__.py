"""Modbus RTU device sessions (one serial line, several unit ids)."""

from otgate.protocols.modbus_rtu.config import ModbusRtuAdapter

__all__ = ["ModbusRtuAdapter"]
