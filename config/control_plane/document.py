"""A pulled config document: how it relates to the local file, and its cache.

The local file is the bootstrap. It gives ``[control_plane]``, ``[gateway]
state_dir`` and ``secrets_dir``, and it runs until a pulled config has been
applied (or while there is none cached). A pulled document is a whole config
in the file's schema with a top-level ``config_version``; it replaces
everything except those three, which it may not set. Validation is the
file's own loader (``load_tree``): no network I/O.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from otgate.config.load import ConfigError, ConfigSource, Loaded, load_tree, parse

CACHE = "control-plane-config.toml"
"""The last good pulled document, in the state dir, as it was served (secret refs unresolved)."""
_LOCAL_ONLY = ("state_dir", "secrets_dir")


def load_pulled(
    raw: bytes,
    source: str,
    local: Loaded,
    *,
    version: int | None = None,
    origin: ConfigSource = ConfigSource.CONTROL_PLANE,
    env: Mapping[str, str] = os.environ,
) -> Loaded:
    """Validate a pulled document against the running (or bootstrap) config ``local``.

    ``version`` is the one the control plane served it as; the document's own
    ``config_version`` must say the same. Raises ``ConfigError`` naming paths.
    """
    tree = parse(raw, source)
    problems = []
    if "control_plane" in tree:
        problems.append("control_plane: comes from the local file; a pulled config may not set it")
    gateway = tree.get("gateway", {})
    if isinstance(gateway, dict):
        problems += [
            f"gateway.{key}: comes from the local file; a pulled config may not set it"
            for key in _LOCAL_ONLY
            if key in gateway
        ]
        here = local.config.gateway
        tree["gateway"] = {**gateway, "state_dir": here.state_dir, "secrets_dir": here.secrets_dir}
    if version is not None and tree.get("config_version") != version:
        problems.append(
            f"config_version: {tree.get('config_version', 'missing')}, but the control plane "
            f"serves this document as version {version}"
        )
    if problems:
        raise ConfigError(source, problems)
    state_dir = Path(local.config.gateway.state_dir)
    loaded = load_tree(tree, raw, source, state_dir / CACHE, env=env, origin=origin)
    cp = local.config.control_plane
    cfg = msgspec.structs.replace(loaded.config, control_plane=cp)
    secrets = loaded.secrets | ({cp.token} if cp is not None else set())
    return Loaded(cfg, secrets, raw, origin)


def load_cached(local: Loaded, env: Mapping[str, str] = os.environ) -> Loaded | None:
    """The cached last good pulled config, or None when there is none.

    Raises ``ConfigError`` when the cache exists but is no longer valid (a
    secret it names is gone, or the bootstrap's schema changed).
    """
    path = Path(local.config.gateway.state_dir) / CACHE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    return load_pulled(raw, str(path), local, origin=ConfigSource.CACHE, env=env)
