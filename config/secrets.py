"""Resolve ``${secret:NAME}`` references in a decoded config tree; redact them again.

A string value anywhere in the TOML tree may contain references, alone
(``password = "${secret:plc_password}"``) or embedded
(``dsn = "postgresql://otgate:${secret:pg_password}@db/plant"``). Only values are
resolved, never keys. There is no escape syntax: a literal ``${secret:`` cannot
appear in a value.

Where a secret comes from, first hit wins:

1. ``$CREDENTIALS_DIRECTORY/NAME`` -- systemd's ``LoadCredential=NAME`` (from
   ``/etc/credstore/NAME``) or ``LoadCredential=NAME:/path`` puts the file
   there, in memory, readable only by the service.
2. ``secrets_dir/NAME`` (``DEFAULT_SECRETS_DIR`` unless configured).

One trailing newline (``\\n`` or ``\\r\\n``) is stripped, the rest is kept as is.
An empty secret is an error (and could not be redacted).
``NAME`` is letters, digits, ``_ . -``, not starting with ``.``: no ``/``, so
no path traversal. Every problem in the tree is collected and raised as one
``SecretError`` whose lines name the config path (``sinks[0].dsn: ...``) but
never a secret value; its ``__cause__``/``__context__`` are cleared because a
``UnicodeDecodeError`` would carry the raw bytes.

This module does file I/O, so it is a separate step after TOML parsing and
before msgspec conversion (config validation itself does no I/O). Keep the
last-good-config cache as the UNRESOLVED file: resolved values never go to disk.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_SECRETS_DIR",
    "MAX_SECRET_BYTES",
    "REDACTED",
    "RedactingFilter",
    "Redactor",
    "SecretError",
    "check_secret_refs",
    "redact",
    "resolve_secrets",
]

DEFAULT_SECRETS_DIR = Path("/etc/otgate/secrets")
MAX_SECRET_BYTES = 1024 * 1024  # systemd's own per-credential limit
REDACTED = "***"

_REF = re.compile(r"\$\{secret:([^}]*)\}")
_REF_START = "${secret:"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_NAME_RULE = "letters, digits, '_', '.', '-', not starting with '.', at most 128"


class SecretError(ValueError):
    """One or more ``${secret:...}`` references could not be resolved.

    ``problems`` holds one line per problem, each starting with the config
    path. Neither the message nor ``repr()`` contains a secret value.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))


class _Lookup:
    """Reads each secret once; remembers values and per-name failures."""

    def __init__(self, secrets_dir: Path | None, env: Mapping[str, str]) -> None:
        creds = env.get("CREDENTIALS_DIRECTORY", "")
        self.creds_dir = Path(creds) if creds else None
        self.secrets_dir = secrets_dir
        self.values: dict[str, str] = {}
        self.failures: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        if name not in self.values and name not in self.failures:
            try:
                self.values[name] = self._read(name)
            except SecretError as exc:
                self.failures[name] = exc.problems[0]
        return self.values.get(name)

    def _read(self, name: str) -> str:
        for where, directory in (
            ("$CREDENTIALS_DIRECTORY", self.creds_dir),
            (str(self.secrets_dir), self.secrets_dir),
        ):
            if directory is None:
                continue
            value = _read_file(directory / name, name, where)
            if value is None:
                continue
            if not value:
                raise SecretError([f"secret {name!r} in {where} is empty"])
            return value
        raise SecretError([self._not_found(name)])

    def _not_found(self, name: str) -> str:
        places = []
        if self.creds_dir is not None:
            places.append("$CREDENTIALS_DIRECTORY")
        if self.secrets_dir is not None:
            places.append(str(self.secrets_dir))
        if not places:
            return (
                f"secret {name!r} not found: $CREDENTIALS_DIRECTORY is not set"
                " and no secrets directory is configured"
            )
        text = f"secret {name!r} not found in {' or '.join(places)}"
        if self.creds_dir is None:
            text += " ($CREDENTIALS_DIRECTORY is not set)"
        return text


def _read_file(path: Path, name: str, where: str) -> str | None:
    """The file's text minus one trailing newline; ``None`` when it does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise SecretError([f"secret {name!r} in {where} is not readable: {reason}"]) from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError([f"secret {name!r} in {where} is larger than {MAX_SECRET_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # `from None`: the UnicodeDecodeError's args hold the raw bytes.
        raise SecretError([f"secret {name!r} in {where} is not valid UTF-8"]) from None
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    return text


def _child(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _refs(text: str, path: str, problems: list[str]) -> list[str]:
    """Names referenced in ``text``; bad names / unterminated refs go to problems."""
    names = []
    matches = list(_REF.finditer(text))
    for match in matches:
        name = match.group(1)
        if _NAME.match(name):
            names.append(name)
        else:
            problems.append(f"{path}: invalid secret name {name!r} (use {_NAME_RULE} characters)")
    if text.count(_REF_START) != len(matches):
        problems.append(f"{path}: unterminated ${{secret:...}} reference (missing '}}')")
    return names


def _walk(node: Any, path: str, on_string) -> Any:
    if isinstance(node, str):
        return on_string(node, path)
    if isinstance(node, dict):
        return {key: _walk(value, _child(path, key), on_string) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(value, _child(path, i), on_string) for i, value in enumerate(node)]
    return node


def check_secret_refs(tree: dict) -> list[tuple[str, str]]:
    """Every ``(config path, secret name)`` referenced in the tree, without I/O.

    Raises ``SecretError`` for invalid names and unterminated references, so
    ``check-config`` can vet references on a machine that lacks the secrets.
    """
    problems: list[str] = []
    found: list[tuple[str, str]] = []

    def on_string(text: str, path: str) -> str:
        if _REF_START in text:
            found.extend((path, name) for name in _refs(text, path, problems))
        return text

    _walk(tree, "", on_string)
    if problems:
        raise SecretError(problems)
    return found


def resolve_secrets(
    tree: dict,
    *,
    secrets_dir: Path | None = DEFAULT_SECRETS_DIR,
    env: Mapping[str, str] = os.environ,
) -> tuple[dict, set[str]]:
    """Return a copy of ``tree`` with every reference replaced, and the secret values.

    The input is not modified. The returned set holds every value substituted
    (feed it to ``Redactor``/``RedactingFilter``/``redact``). Raises
    ``SecretError`` listing every problem in the tree; nothing is partially
    resolved.
    """
    lookup = _Lookup(secrets_dir, env)
    problems: list[str] = []
    used: set[str] = set()

    def on_string(text: str, path: str) -> str:
        if _REF_START not in text:
            return text
        for name in _refs(text, path, problems):
            if lookup.get(name) is None:
                problems.append(f"{path}: {lookup.failures[name]}")

        def substitute(match: re.Match[str]) -> str:
            value = lookup.values.get(match.group(1))
            if value is None:
                return match.group(0)
            used.add(value)
            return value

        return _REF.sub(substitute, text)

    resolved = _walk(tree, "", on_string)
    if problems:
        raise SecretError(problems)
    return resolved, used


def _variants(value: str) -> set[str]:
    """How a value may show up in text: raw, repr-, JSON- and URL-escaped."""
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    forms.add(urllib.parse.quote(value, safe=""))
    forms.add(urllib.parse.quote_plus(value, safe=""))
    return {form for form in forms if form}


class Redactor:
    """Replaces every known secret value (and its escaped forms) with ``***``.

    Compiled once: build a new one when the secret set changes (reload).
    Longer values are matched first, so a secret that contains another is
    hidden whole.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in secrets:
            if value:
                forms |= _variants(value)
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __repr__(self) -> str:
        return "Redactor(...)"

    def text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def tree(self, node: Any) -> Any:
        """Redact strings (values and keys) in a dict/list/tuple tree; a str as text."""
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, dict):
            return {self.tree(key): self.tree(value) for key, value in node.items()}
        if isinstance(node, list | tuple):
            return type(node)(self.tree(value) for value in node)
        return node


def redact(text_or_tree: Any, secrets: Iterable[str]) -> Any:
    """``Redactor(secrets).tree(text_or_tree)``: for one-off use (status, errors).

    For hot paths (every log line) build one ``Redactor`` and reuse it.
    """
    return Redactor(secrets).tree(text_or_tree)


_STANDARD_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """A logging filter that removes secret values from records.

    Attach it to HANDLERS (``handler.addFilter(f)``): a filter on a logger does
    not see records propagated from child loggers. It rewrites the formatted
    message, string ``extra`` fields and the formatted traceback in place.
    ``update()`` swaps in a new secret set after a reload.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        self._redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self._redactor
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the formatter's to report
            return True
        record.msg = redactor.text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.text(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_RECORD_ATTRS and isinstance(value, str):
                setattr(record, key, redactor.text(value))
        return True
