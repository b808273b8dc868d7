"""Modbus point mapping, request planning and type conversion shared by
``modbus_tcp`` and ``modbus_rtu``."""

from otgate.protocols.modbus.config import DataType, Order, Point, PointGroup, PollSettings, Table

__all__ = ["DataType", "Order", "Point", "PointGroup", "PollSettings", "Table"]
