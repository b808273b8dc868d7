"""${secret:NAME} resolution from real files, and redaction."""

from __future__ import annotations

import io
import logging
import os
import tomllib
import traceback
from pathlib import Path

import pytest

from otgate.config.secrets import (
    REDACTED,
    RedactingFilter,
    Redactor,
    SecretError,
    check_secret_refs,
    redact,
    resolve_secrets,
)

PG = "s3cr3t-pg"
PLC = "plc pass w/ spaces & %"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    creds = tmp_path / "credentials"  # stands in for /run/credentials/otgate.service
    store = tmp_path / "secrets"
    creds.mkdir()
    store.mkdir()
    return creds, store


def write(directory: Path, name: str, data: str | bytes) -> None:
    path = directory / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


TREE_TOML = """
status_listen = "127.0.0.1:8080"
[[adapters]]
id = "press-1"
password = "${secret:plc_password}"
port = 502
[[sinks]]
type = "postgres"
dsn = "postgresql://otgate:${secret:pg_password}@127.0.0.1/test?x=${secret:pg_password}"
tags = ["a", "${secret:plc_password}"]
"""


def test_resolves_from_credentials_directory_and_secrets_dir(dirs) -> None:
    creds, store = dirs
    write(creds, "pg_password", PG + "\n")  # one trailing newline stripped
    write(store, "plc_password", PLC + "\r\n")
    tree = tomllib.loads(TREE_TOML)
    original = tomllib.loads(TREE_TOML)

    resolved, values = resolve_secrets(
        tree, secrets_dir=store, env={"CREDENTIALS_DIRECTORY": str(creds)}
    )

    assert resolved["adapters"][0]["password"] == PLC
    assert resolved["adapters"][0]["port"] == 502
    assert resolved["sinks"][0]["dsn"] == f"postgresql://otgate:{PG}@127.0.0.1/test?x={PG}"
    assert resolved["sinks"][0]["tags"] == ["a", PLC]
    assert resolved["status_listen"] == "127.0.0.1:8080"
    assert values == {PG, PLC}
    assert tree == original, "the input tree must not be modified"


def test_credentials_directory_wins_and_only_one_newline_is_stripped(dirs) -> None:
    creds, store = dirs
    write(creds, "pg_password", "from-credential\n\n")
    write(store, "pg_password", "from-store")
    resolved, _ = resolve_secrets(
        {"dsn": "${secret:pg_password}"},
        secrets_dir=store,
        env={"CREDENTIALS_DIRECTORY": str(creds)},
    )
    assert resolved == {"dsn": "from-credential\n"}


def test_empty_credential_is_an_error_not_a_fallback(dirs) -> None:
    creds, store = dirs
    write(creds, "pg_password", "\n")
    write(store, "pg_password", PG)
    expected = r"^dsn: secret 'pg_password' in \$CREDENTIALS_DIRECTORY is empty$"
    with pytest.raises(SecretError, match=expected):
        resolve_secrets(
            {"dsn": "${secret:pg_password}"},
            secrets_dir=store,
            env={"CREDENTIALS_DIRECTORY": str(creds)},
        )


def test_missing_secret_names_the_path_and_where_it_looked(dirs) -> None:
    creds, store = dirs
    tree = {"sinks": [{"dsn": "postgresql://u:${secret:pg_password}@h/db"}]}
    with pytest.raises(SecretError) as info:
        resolve_secrets(tree, secrets_dir=store, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert str(info.value) == (
        f"sinks[0].dsn: secret 'pg_password' not found in $CREDENTIALS_DIRECTORY or {store}"
    )

    with pytest.raises(SecretError) as info:
        resolve_secrets(tree, secrets_dir=store, env={})
    assert "($CREDENTIALS_DIRECTORY is not set)" in str(info.value)

    with pytest.raises(SecretError, match="no secrets directory is configured"):
        resolve_secrets(tree, secrets_dir=None, env={})


def test_every_problem_is_reported_at_once(dirs) -> None:
    _, store = dirs
    write(store, "ok", "fine")
    tree = {
        "a": ["${secret:missing_one}", "${secret:ok}"],
        "b": {"c": "${secret:missing_two}"},
        "d": "${secret:../etc/passwd}",
    }
    with pytest.raises(SecretError) as info:
        resolve_secrets(tree, secrets_dir=store, env={})
    paths = [line.split(":", 1)[0] for line in info.value.problems]
    assert paths == ["a[0]", "b.c", "d"]


@pytest.mark.parametrize(
    "name",
    ["../x", "..", ".", ".hidden", "a/b", "/etc/passwd", "", "a b", "x" * 129, "a\x00b"],
)
def test_unsafe_names_are_refused_without_touching_files(dirs, name: str) -> None:
    creds, store = dirs
    # A file the traversal would reach if the name were used as a path.
    write(store.parent, "x", "outside")
    tree = {"k": "${secret:" + name + "}"}
    with pytest.raises(SecretError, match=r"^k: invalid secret name"):
        resolve_secrets(tree, secrets_dir=store, env={"CREDENTIALS_DIRECTORY": str(creds)})
    with pytest.raises(SecretError, match="invalid secret name"):
        check_secret_refs(tree)


def test_unterminated_reference_is_refused(dirs) -> None:
    _, store = dirs
    with pytest.raises(SecretError, match=r"^x\[1\]: unterminated"):
        resolve_secrets({"x": ["ok", "pre ${secret:pg_password"]}, secrets_dir=store, env={})


def test_check_secret_refs_lists_references_without_io() -> None:
    tree = tomllib.loads(TREE_TOML)
    assert check_secret_refs(tree) == [
        ("adapters[0].password", "plc_password"),
        ("sinks[0].dsn", "pg_password"),
        ("sinks[0].dsn", "pg_password"),
        ("sinks[0].tags[1]", "plc_password"),
    ]


def test_errors_never_carry_a_secret_value(dirs) -> None:
    """Unreadable, non-UTF-8, empty, too large: the message and traceback hold no value."""
    _, store = dirs
    marker = b"TOPSECRET-\xff-VALUE"
    write(store, "binary", marker)
    write(store, "empty", "")
    write(store, "big", b"TOPSECRET" * (1024 * 1024 // 9 + 1))
    (store / "dir").mkdir()
    tree = {
        "a": "${secret:binary}",
        "b": "${secret:empty}",
        "c": "${secret:big}",
        "d": "${secret:dir}",
    }
    with pytest.raises(SecretError) as info:
        resolve_secrets(tree, secrets_dir=store, env={})
    exc = info.value
    assert [p.split(":", 1)[0] for p in exc.problems] == ["a", "b", "c", "d"]
    assert "not valid UTF-8" in exc.problems[0]
    assert "is empty" in exc.problems[1]
    assert "larger than" in exc.problems[2]
    assert "not readable" in exc.problems[3]
    rendered = repr(exc) + str(exc) + "".join(traceback.format_exception(exc))
    assert "TOPSECRET" not in rendered
    assert exc.__cause__ is None and exc.__context__ is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_unreadable_secret_is_a_clear_error(dirs) -> None:
    _, store = dirs
    write(store, "locked", "TOPSECRET")
    (store / "locked").chmod(0)
    with pytest.raises(SecretError, match=r"'locked' .* is not readable: Permission denied"):
        resolve_secrets({"a": "${secret:locked}"}, secrets_dir=store, env={})


def test_redact_text_and_tree() -> None:
    secrets = {PG, PLC, "pg"}  # "pg" is inside PG: the longer one is hidden whole
    text = f"connect dsn=postgresql://u:{PG}@h password={PLC!r} json={PLC!r}"
    out = redact(text, secrets)
    assert PG not in out and PLC not in out and "s3cr3t" not in out
    assert out.count(REDACTED) == 3

    tree = {"dsn": f"x{PG}y", "list": [PLC, 5, None], "pg": (1, "ok")}
    assert redact(tree, secrets) == {
        "dsn": f"x{REDACTED}y",
        "list": [REDACTED, 5, None],
        REDACTED: (1, "ok"),
    }
    assert redact("nothing to hide", set()) == "nothing to hide"


def test_redact_covers_escaped_forms() -> None:
    import json
    import urllib.parse

    value = 'p@ss:w/rd"\\'
    for form in (
        repr(value),
        json.dumps(value),
        json.dumps({"dsn": f"u:{value}@h"}),
        urllib.parse.quote(value, safe=""),
        f"postgresql://u:{urllib.parse.quote_plus(value)}@h/db",
    ):
        out = Redactor({value}).text(form)
        assert REDACTED in out, form
        assert "ss:w" not in out, (form, out)


def test_redacting_filter_cleans_messages_extras_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s dsn=%(dsn)s"))
    flt = RedactingFilter({PG})
    handler.addFilter(flt)
    logger = logging.getLogger("otgate.test_secrets")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logging.getLogger("otgate.test_secrets.child")  # propagated records too
        logger.info("sink_connect password=%s", PG, extra={"dsn": f"u:{PG}@h"})
        try:
            raise ConnectionError(f"auth failed for {PG}")
        except ConnectionError:
            logger.exception("sink_error", extra={"dsn": "-"})
        logging.getLogger("otgate.test_secrets.child").warning("child %s", PG, extra={"dsn": ""})
        flt.update({"rotated"})
        logger.info("after reload %s", "rotated", extra={"dsn": ""})
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert PG not in out
    assert "sink_connect password=*** dsn=u:***@h" in out
    assert "ConnectionError: auth failed for ***" in out
    assert "child ***" in out
    assert "after reload ***" in out
