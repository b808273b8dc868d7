"""MQTT device sessions (aiomqtt): wildcard subscriptions, payload mappings, persistent sessions."""

from otgate.protocols.mqtt.config import MqttField, MqttSource, MqttSubscription, MqttTls

__all__ = ["MqttField", "MqttSource", "MqttSubscription", "MqttTls"]
