"""Building an asyncua Client from config, and which errors a reconnect can fix."""

from __future__ import annotations

import asyncio
import errno

from asyncua import Client, ua
from asyncua.crypto import security_policies

from otgate.protocols.opcua.config import OpcUaSource, SecurityMode, SecurityPolicy

_POLICIES = {
    SecurityPolicy.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
    SecurityPolicy.AES128_SHA256_RSAOAEP: security_policies.SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicy.AES256_SHA256_RSAPSS: security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}

# Status codes after which trying again later can help (server restarting,
# overloaded, session or channel gone). Everything else (bad node ids, bad
# credentials, rejected certificates) is a configuration problem.
_RETRIABLE_STATUS = {
    ua.StatusCodes.BadServerHalted,
    ua.StatusCodes.BadShutdown,
    ua.StatusCodes.BadTimeout,
    ua.StatusCodes.BadTooManySessions,
    ua.StatusCodes.BadTooManySubscriptions,  # stale sessions of ours not yet expired
    ua.StatusCodes.BadTooManyOperations,
    ua.StatusCodes.BadServerNotConnected,
    ua.StatusCodes.BadSessionIdInvalid,
    ua.StatusCodes.BadSessionClosed,
    ua.StatusCodes.BadSessionNotActivated,
    ua.StatusCodes.BadSecureChannelClosed,
    ua.StatusCodes.BadSecureChannelIdInvalid,
    ua.StatusCodes.BadConnectionClosed,
    ua.StatusCodes.BadCommunicationError,
    ua.StatusCodes.BadNoCommunication,
    ua.StatusCodes.BadResourceUnavailable,
    ua.StatusCodes.BadOutOfMemory,
    ua.StatusCodes.BadSubscriptionIdInvalid,
    ua.StatusCodes.BadInternalError,
}

# Subscription refusals that make AUTO mode fall back to polling.
NO_SUBSCRIPTION_STATUS = {
    ua.StatusCodes.BadServiceUnsupported,
    ua.StatusCodes.BadTooManySubscriptions,
    ua.StatusCodes.BadNotSupported,
    ua.StatusCodes.BadNotImplemented,
}


class ConnectionLost(Exception):
    """The session noticed the server went away (always retriable)."""


def status_of(exc: BaseException) -> int | None:
    """The OPC UA status code carried by an asyncua error, if any."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    if isinstance(code, ua.StatusCode):
        return code.value
    return None


def is_retriable(exc: BaseException) -> bool:
    """Whitelist of errors that a reconnect (after a backoff) can fix."""
    if isinstance(
        exc, ConnectionLost | TimeoutError | asyncio.TimeoutError | ConnectionError | EOFError
    ):
        return True
    if isinstance(exc, OSError):
        return exc.errno in {
            None,
            errno.ECONNREFUSED,
            errno.ECONNRESET,
            errno.ECONNABORTED,
            errno.EPIPE,
            errno.EHOSTUNREACH,
            errno.ENETUNREACH,
            errno.ETIMEDOUT,
        }
    code = status_of(exc)
    if code is not None:
        return code in _RETRIABLE_STATUS
    return False


async def make_client(cfg: OpcUaSource) -> Client:
    """A configured, unconnected client (security and identity applied).

    With a security policy and no pinned server certificate this opens a
    short unsecured channel to fetch the endpoint list (asyncua's behaviour).
    """
    client = Client(
        cfg.endpoint, timeout=cfg.request_timeout_s, watchdog_intervall=cfg.watchdog_interval_s
    )
    client.session_timeout = int(cfg.session_timeout_s * 1000)
    client.application_uri = cfg.application_uri
    client.name = f"otgate {cfg.id}"
    if cfg.username is not None:
        client.set_user(cfg.username)
        client.set_password(cfg.password or "")
    if cfg.security_policy is not SecurityPolicy.NONE:
        await client.set_security(
            _POLICIES[cfg.security_policy],
            certificate=cfg.certificate or "",
            private_key=cfg.private_key or "",
            server_certificate=cfg.server_certificate,
            mode=_MODES[cfg.security_mode],
        )
    return client
