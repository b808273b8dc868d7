"""otgate's durable log: one interface (``base``), two backends.

* ``config``: the ``[log]`` section (``LogConfig``).
* ``open``: ``make_log`` / ``open_log`` (backend + topic set), ``open_publisher``,
  ``schema_store``, ``decoder``, ``open_retention``.
* ``embedded`` / ``embedded_consumer``: the SQLite backend (default, no broker).
* ``kafka``: the aiokafka backend (Redpanda in production).
* ``topics``: the topic set, record type per topic, eviction priority.
* ``avro`` / ``compat``: schemas derived from the record Structs, the compiled
  encoder, the Confluent wire format, BACKWARD-compatibility check.
* ``schemas``: schema ids (embedded schema table, or registry + disk cache).
* ``publisher``: ``ReadingPublisher`` (``BuildContext.publish``), ``Codec``, ``Decoder``.
* ``retention`` / ``actor``: time/size retention, disk tiers, ``LogMaintenance``.
* ``cmd``: ``otgate log topics`` / ``otgate log read``.
"""
