"""OPC UA device sessions (asyncua): subscriptions, polling fallback, reconnect."""

from otgate.protocols.opcua.config import OpcUaPoint, OpcUaSource

__all__ = ["OpcUaPoint", "OpcUaSource"]
