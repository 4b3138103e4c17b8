"""Reaching the Hugging Face Hub on a network that fails: a short retry, then one line with the offline route.

The Hub client, datasets and transformers each raise their own errors when a server cannot be reached (httpx2,
requests, aiohttp, `OSError("We couldn't connect")`, `LocalEntryNotFoundError`, offline mode's refusal). The command
line turns every one of them into one line: `bounded_hub_retries` keeps the Hub client's retries short where it runs
a command, and `network_error_line` names the cause (no hosts, no traceback) and what to do instead (`HubUnreachable`
carries that line out of the model loader). An HTTP answer with a status (404, 401) is not a network failure.

Standard library only at import time: the command line's error handler imports this before anything heavy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

# What the command line allows the Hub client on a network that fails: huggingface_hub retries a failed request 5
# times, waiting 1, 2, 4, 8, 8 s (23 s per file, ~35 s for one model), and gives a retried HEAD 60 s to answer; it has
# no setting for either. `bounded_hub_retries` keeps one short retry.
CLI_RETRIES = 1
CLI_RETRY_WAIT_S = 0.5
CLI_ETAG_TIMEOUT_S = 5  # seconds a metadata request (HEAD) may take: HF_HUB_ETAG_TIMEOUT when the user sets none

# Class names (of an error or its bases) that mean "the network failed", in the HTTP clients the Hub client, datasets
# and transformers use (httpx2/httpcore2 for huggingface_hub 2, httpx, requests/urllib3, aiohttp); matched by name so
# that none of them is imported here. Of the built-in errors only these exact types count: their other subclasses
# (BrokenPipeError, ConnectionResetError) and TimeoutError also come from pipes, worker processes and futures.
_NETWORK_ERRORS = {
    "ConnectError", "ConnectTimeout", "NetworkError", "TimeoutException", "ProxyError", "ReadTimeout", "PoolTimeout",
    "ConnectionError", "NewConnectionError", "MaxRetryError", "NameResolutionError", "ClientConnectorError",
    "ClientConnectionError", "ServerTimeoutError",
}
_NETWORK_MODULES = {"httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3", "aiohttp"}
_BUILTIN_NETWORK_ERRORS = {"ConnectionError", "ConnectionRefusedError", "gaierror"}  # datasets: ConnectionError
_OFFLINE_ERRORS = {"OfflineModeIsEnabled"}
OFFLINE_ROUTE = (
    "work offline with local folders instead of Hub ids, or set HF_HUB_OFFLINE=1 to use what the Hugging Face cache "
    "already holds; HF_ENDPOINT=URL points clapforge at a local or private Hub"
)

PUSH_ROUTE = (
    "an upload needs a reachable Hub: check the network, or set HF_ENDPOINT=URL to push to a local or private Hub"
)


class HubUnreachable(ConnectionError):
    """The Hugging Face Hub could not be reached (or offline mode forbids it) for something not in the local cache."""


@contextlib.contextmanager
def bounded_hub_retries() -> Iterator[None]:
    """Within the block, bound what the Hub client spends on a failing network (the command line runs its commands
    in one): one retry after `CLI_RETRY_WAIT_S`, and metadata requests limited to HF_HUB_ETAG_TIMEOUT seconds
    (`CLI_ETAG_TIMEOUT_S` unless that is set). A cached file is still used after one failed request, as before; an
    uncached one fails in seconds, and `network_error_line` says what to do. huggingface_hub's own patient defaults
    come back after the block (a library caller, or a test calling the command line in its process, keeps them)."""
    from huggingface_hub import constants, file_download
    from huggingface_hub.utils import _http

    saved = [(backoff, dict(backoff.__kwdefaults__ or {})) for backoff in (_http.http_backoff,
                                                                          _http.http_stream_backoff)]
    saved_timeouts = constants.HF_HUB_ETAG_TIMEOUT, getattr(file_download, "_ETAG_RETRY_TIMEOUT", None)
    # The retry's own warnings ("'...' thrown while requesting HEAD <url>", "Retrying in 0.5s") would come before the
    # one line the command ends with; it says what they would.
    http_logger = logging.getLogger(_http.__name__)
    http_logger.addFilter(_quiet_retries)
    try:
        if not os.environ.get("HF_HUB_ETAG_TIMEOUT"):  # hf_hub_download reads the constant on each call
            constants.HF_HUB_ETAG_TIMEOUT = CLI_ETAG_TIMEOUT_S
        # Retries are keyword defaults of http_backoff (every caller that does not pass its own count gets them).
        for backoff, defaults in saved:
            if "max_retries" in defaults:
                backoff.__kwdefaults__.update(
                    max_retries=CLI_RETRIES, base_wait_time=CLI_RETRY_WAIT_S, max_wait_time=CLI_RETRY_WAIT_S
                )
        if saved_timeouts[1] is not None:  # the retried HEAD of a file the cache lacks (60 s)
            file_download._ETAG_RETRY_TIMEOUT = constants.HF_HUB_ETAG_TIMEOUT
        yield
    finally:
        http_logger.removeFilter(_quiet_retries)
        for backoff, defaults in saved:
            backoff.__kwdefaults__ = defaults or None
        constants.HF_HUB_ETAG_TIMEOUT = saved_timeouts[0]
        if saved_timeouts[1] is not None:
            file_download._ETAG_RETRY_TIMEOUT = saved_timeouts[1]


def _quiet_retries(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith("Retrying in") or "thrown while requesting" in message)


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _names(error: BaseException) -> set[tuple[str, str]]:
    return {(cls.__module__.split(".")[0], cls.__name__) for cls in type(error).__mro__}


def _network_cause(error: BaseException) -> str | None:
    """The class name of the network failure in `error`'s chain, if there is one."""
    for e in _chain(error):
        if type(e).__name__ in _BUILTIN_NETWORK_ERRORS and type(e).__module__ in ("builtins", "socket"):
            return type(e).__name__
        if any(module in _NETWORK_MODULES and name in _NETWORK_ERRORS for module, name in _names(e)):
            return type(e).__name__
    return None


def is_offline_error(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is huggingface_hub's refusal to go online under HF_HUB_OFFLINE=1."""
    return any(name in _OFFLINE_ERRORS for e in _chain(error) for _, name in _names(e)) or (
        _offline_mode() and any("LocalEntryNotFoundError" in {n for _, n in _names(e)} for e in _chain(error))
    )


def is_network_error(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a failure to reach a server: a refused or timed-out connection, a name
    that does not resolve, a proxy that refuses; or huggingface_hub's "not in the cache and the Hub is unreachable"
    (`LocalEntryNotFoundError`), and transformers' "We couldn't connect" wrapping of it. HTTP errors with a status
    (404, 401) are answers, not network failures."""
    if _network_cause(error) is not None:
        return True
    for e in _chain(error):
        if any(name in _OFFLINE_ERRORS or name == "LocalEntryNotFoundError" for _, name in _names(e)):
            return True
        if isinstance(e, OSError) and "couldn't connect" in str(e).lower():
            return True
    return False


def _offline_mode() -> bool:
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        return bool(constants.is_offline_mode())
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def network_error_line(error: BaseException, what: str | None = None, route: str = OFFLINE_ROUTE) -> str | None:
    """One line for a network failure (None for any other error): the cause without hosts or tracebacks, and the
    offline route. `what` names what was being fetched ("model owner/name"); `route` is what to do instead
    (`PUSH_ROUTE` for an upload, which has no offline form)."""
    if isinstance(error, HubUnreachable):
        return str(error)
    if not is_network_error(error):
        return None
    fetching = f" to fetch {what}" if what else ""
    if is_offline_error(error):
        return (f"HF_HUB_OFFLINE is set and the Hugging Face cache does not hold {what or 'a file this needs'}: "
                "unset HF_HUB_OFFLINE (with a network) to download it once, or pass a local folder")
    cause = _network_cause(error)
    held = ", and the local cache does not hold it" if what else ""
    return f"could not reach the Hugging Face Hub{fetching}{held} ({cause or 'network error'}): {route}"
