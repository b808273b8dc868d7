"""The tagged unions of configurable parts. Adding a protocol or a sink is one
package plus one line here; each member has ``build(ctx) -> Actor``."""

from __future__ import annotations

from otgate.protocols.modbus_rtu import ModbusRtuAdapter
from otgate.protocols.modbus_tcp import ModbusTcpAdapter
from otgate.protocols.mqtt import MqttSource
from otgate.protocols.opcua import OpcUaSource
from otgate.protocols.synthetic import SyntheticAdapter
from otgate.simulations.parts import SimulatorConfig
from otgate.sinks.alert_router import AlertRouter
from otgate.sinks.http import HttpSink
from otgate.sinks.kafka import KafkaSink
from otgate.sinks.postgres import PostgresSink
from otgate.sinks.s3 import S3Sink

AdapterConfig = ModbusTcpAdapter | ModbusRtuAdapter | OpcUaSource | MqttSource | SyntheticAdapter
SinkConfig = PostgresSink | AlertRouter | HttpSink | KafkaSink | S3Sink

__all__ = ["AdapterConfig", "SimulatorConfig", "SinkConfig"]
