"""otgate's durable log: one interface (``base``), two backends (embedded SQLite, Kafka)."""
