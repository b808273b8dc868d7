"""The operator console: a web page served by the status server at ``/console/``.

A face over the same operator services and routes as the HTTP API and the CLI
(``/alarms``, ``/dlq``, ``/components/{id}/restart``): the page calls them with
the caller's bearer token and ``X-Otgate-Surface: console``, so the permission
check and the audit are the services' own. The page itself (``index.html``,
``console.js``, ``console.css``) is static, needs no build step and no network
beyond the status server; live updates come from one server-sent-event stream
(``/console/events``).
"""
