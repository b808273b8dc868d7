"""``otgate mcp``: the MCP tool surface over the gateway's operator services
(a fourth face next to HTTP, the CLI and the console; see ``server.py``)."""
