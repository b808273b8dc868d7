"""Modbus TCP device sessions."""

from otgate.protocols.modbus_tcp.config import ModbusTcpAdapter

__all__ = ["ModbusTcpAdapter"]
