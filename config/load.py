"""Loading the TOML config: parse, resolve secrets, decode strictly, name paths.

Parsing and validation do no network I/O; the only files read are the config
itself and the secret files its ``${secret:NAME}`` references name.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from otgate.config.accepted import with_accepted
from otgate.config.schema import GatewayConfig
from otgate.config.secrets import SecretError, check_secret_refs, resolve_secrets


class ConfigError(Exception):
    """The config cannot be used; ``problems`` are lines like ``path: what is wrong``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass
class Loaded:
    config: GatewayConfig
    secrets: set[str] = field(default_factory=set, repr=False)
    raw: bytes = field(default=b"", repr=False)


_AT = re.compile(r"^(?P<msg>.*?) - at `\$(?P<path>[^`]*)`$", re.S)


def path_first(message: str, root: type | None = None, tree: object = None) -> str:
    """msgspec says ``Expected `int`, got `str` - at `$.a[0].b` ``; we say ``a[0].b: ...``.

    With the ``root`` type and the decoded ``tree``, a bad enum value or
    ``type`` tag also lists the values the field accepts."""
    m = _AT.match(message)
    if not m:
        return message
    path = m.group("path").lstrip(".") or "(top level)"
    msg = m.group("msg")
    if root is not None:
        msg = with_accepted(msg, root, tree, path)
    return f"{path}: {msg}"


def decode(tree: dict, source: str = "<config>") -> GatewayConfig:
    """Strictly convert a parsed tree (secrets already resolved) to the config."""
    try:
        return msgspec.convert(tree, GatewayConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(source, [path_first(str(exc), GatewayConfig, tree)]) from None


def parse(raw: bytes, source: str) -> dict:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None


def default_state_dir(config_path: Path, env: Mapping[str, str]) -> Path:
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several, colon-separated; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    return config_path.resolve().parent / "state"


def load_config(
    path: str | os.PathLike[str],
    *,
    resolve: bool = True,
    env: Mapping[str, str] = os.environ,
    base: Path | None = None,
) -> Loaded:
    """Read, resolve and decode the config file at ``path``.

    With ``resolve=False`` secret references are only checked for form (for
    ``check-config`` on a machine without the secrets). ``state_dir`` comes back
    absolute; relative paths are taken from ``base`` (default: the file's own
    directory; the last-good cache passes the original config's). Raises ``ConfigError`` naming the file and the path of each problem.
    """
    p = Path(path)
    source = str(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror or exc}"]) from None
    tree = parse(raw, source)
    secrets: set[str] = set()
    try:
        if resolve:
            gateway = tree.get("gateway", {})
            if not isinstance(gateway, dict):
                raise ConfigError(source, ["gateway: Expected `object` (a [gateway] table)"])
            secrets_dir = gateway.get("secrets_dir", "/etc/otgate/secrets")
            if not isinstance(secrets_dir, str):
                raise ConfigError(source, ["gateway.secrets_dir: Expected `str`"])
            tree, secrets = resolve_secrets(
                tree, secrets_dir=Path(secrets_dir) if secrets_dir else None, env=env
            )
        else:
            check_secret_refs(tree)
    except SecretError as exc:
        raise ConfigError(source, list(exc.problems)) from None
    cfg = decode(tree, source)
    home = base if base is not None else p.resolve().parent
    state_dir = Path(cfg.gateway.state_dir) if cfg.gateway.state_dir else None
    if state_dir is None:
        state_dir = default_state_dir(home / p.name, env)
    elif not state_dir.is_absolute():
        state_dir = home / state_dir
    gateway = msgspec.structs.replace(cfg.gateway, state_dir=str(state_dir))
    return Loaded(msgspec.structs.replace(cfg, gateway=gateway), secrets, raw)
