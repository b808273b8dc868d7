"""Modbus point mapping, request planning and type conversion shared by
``modbus_tcp`` and ``modbus_rtu``.

Example (one TCP device, one unit)::

    [[adapters]]
    type = "modbus_tcp"
    id = "press-plc"
    host = "10.0.0.17"
    poll_interval = 1.0
    timeout = 0.5
    max_registers_per_read = 100
    max_gap = 8

      [[adapters.groups]]
      unit_id = 1
      asset_id = "press-1"

        [[adapters.groups.points]]
        parameter = "oil_temperature"
        address = 0            # 0-based wire address (Modicon 40001)
        type = "float32"
        word_order = "little"  # CDAB
        unit = "degC"

        [[adapters.groups.points]]
        parameter = "overtemp_trip"
        address = 4
        type = "bit"
        bit = 0
        classification = "ALARM"

Files: ``config`` (points, groups, poll settings), ``planning`` (fewest
reads), ``convert`` (registers → values), ``errors`` (failure
classification), ``client`` (pymodbus hardening), ``session`` (the poller
actor both transports subclass).
"""

from otgate.protocols.modbus.config import DataType, Order, Point, PointGroup, PollSettings, Table

__all__ = ["DataType", "Order", "Point", "PointGroup", "PollSettings", "Table"]
