"""Serving the app: over HTTP (uvicorn) or Socket Mode, until SIGTERM/SIGINT, then a graceful stop.

Start-up is a sequence of steps that can each fail for a reason the operator must fix (database, port, bot
token, app token, network). Each failure becomes a StartupError with one line saying what to change; each step
is raced against SIGTERM/SIGINT so the bot stops in every state, connecting included.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import aiohttp
import uvicorn
from slack_sdk.errors import SlackApiError

from bot.errors import StartupError
from bot.retry import backoff_delay, retrying
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from bot.slack.app import create_asgi, create_metrics_asgi
from bot.store.database import DatabaseUnavailable
from bot.store.private import NotPrivate

log = logging.getLogger(__name__)
T = TypeVar("T")

# Socket Mode: how long the first WebSocket connection may take (slack_sdk retries every 10 s meanwhile).
SOCKET_CONNECT_TIMEOUT = 30.0
# Slack unreachable at start-up: retries 0.5, 1 and 2 s apart (a network blip passes; an outage ends start-up).
# No jitter: one process, nothing to spread out.
CONNECT_RETRIES = 3
CONNECT_BACKOFF_BASE = 0.5
CONNECT_BACKOFF_MAX = 2.0
_NETWORK_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)

_BOT_TOKEN_FIXES = {
    "invalid_auth": "set it to the Bot User OAuth Token (xoxb-...) from OAuth & Permissions of this Slack app",
    "not_authed": "set it to the Bot User OAuth Token (xoxb-...) from OAuth & Permissions of this Slack app",
    "token_revoked": "the token was revoked: reinstall the app to the workspace and set the new Bot User OAuth Token",
    "token_expired": "the token expired: reinstall the app (token rotation is off in manifest.yml) and set the new one",
    "account_inactive": "the app was uninstalled or its workspace deactivated: reinstall it and set the new token",
}
_APP_TOKEN_FIXES = {
    "invalid_auth": "generate an app-level token with connections:write (Basic Information -> App-Level Tokens) "
    "and set SLACK_APP_TOKEN to it",
    "not_authed": "set SLACK_APP_TOKEN to an app-level token (xapp-...) with connections:write",
    "token_revoked": "the token was revoked: generate a new app-level token with connections:write",
    "not_allowed_token_type": "SLACK_APP_TOKEN must be an app-level token (xapp-...), not a bot or user token",
    "missing_scope": "the app-level token lacks connections:write: generate one with that scope",
}


class _Stopped(Exception):
    """SIGTERM/SIGINT arrived while a start-up step was still running."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime owns shutdown so jobs can finish first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _OneLineRetries(logging.Filter):
    """slack_sdk logs each failed Socket Mode connection attempt with a traceback; the message says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.getMessage().startswith("Failed to connect"):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_socket_log = logging.getLogger("bot.socket_mode")
_socket_log.addFilter(_OneLineRetries())


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_http(
    settings: Settings,
    *,
    host: str = "0.0.0.0",
    port: int | None = None,
    stop: asyncio.Event | None = None,
    runtime: Runtime | None = None,
    role: str = "all",
    settle: bool = False,
    metrics_port: int | None = None,
) -> None:
    """Run the bot behind uvicorn until SIGTERM/SIGINT (or `stop`), then shut down gracefully.

    Raises StartupError when it cannot start; returns quietly when stopped during start-up. The worker role serves
    only /healthz on `port`: Slack's requests go to the web replicas. Every role serves /metrics on
    METRICS_HOST:METRICS_PORT (`metrics_port` overrides the port).
    """
    stop = stop or _stop_event()
    port = port or settings.port
    runtime = runtime or _build(settings, role)
    slack = runtime.role != "worker"
    server: _Server | None = None
    serving: asyncio.Task[None] | None = None
    listener: socket.socket | None = None
    metrics = _MetricsServer(settings.metrics_host, metrics_port or settings.metrics_port)
    try:
        listener = _bind(host, port)
        metrics.bind()
        server = _server(runtime, host, port, slack=slack)
        await _until(stop, check_bot_token(runtime))
        await runtime.start()
        serving = await _start(server, listener)
        await metrics.start()
        if settle:
            _settle_memory()
        runtime.ready.set()
        if slack:
            log.info("listening on http://%s:%s/slack/events", host, port)
        else:
            log.info("worker: health on http://%s:%s/healthz", host, port)
        await _wait_either(stop, serving)
    except _Stopped:
        log.info("stopped during start-up")
    finally:
        runtime.ready.clear()
        await _stop_server(server, serving)
        if listener is not None:
            listener.close()
        await metrics.stop()
        await runtime.close()


async def serve_socket(
    settings: Settings,
    *,
    host: str = "0.0.0.0",
    port: int | None = None,
    stop: asyncio.Event | None = None,
    runtime: Runtime | None = None,
    role: str = "all",
    settle: bool = False,
    metrics_port: int | None = None,
) -> None:
    """Run the bot over Socket Mode until SIGTERM/SIGINT (or `stop`), then shut down gracefully.

    Raises StartupError when it cannot start; returns quietly when stopped during start-up. /healthz (and OAuth's
    install pages) on `port`, /metrics on METRICS_HOST:METRICS_PORT.
    """
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    assert settings.slack_app_token is not None
    stop = stop or _stop_event()
    port = port or settings.port
    runtime = runtime or _build(settings, role)
    handler: AsyncSocketModeHandler | None = None
    server: _Server | None = None
    serving: asyncio.Task[None] | None = None
    listener: socket.socket | None = None
    metrics = _MetricsServer(settings.metrics_host, metrics_port or settings.metrics_port)
    try:
        # Socket Mode needs no inbound port for Slack, but orchestrators still probe /healthz and scrape /metrics.
        listener = _bind(host, port)
        metrics.bind()
        server = _server(runtime, host, port, slack=False)
        await _until(stop, check_bot_token(runtime))
        url = await _until(stop, open_socket_url(runtime, settings))
        handler = AsyncSocketModeHandler(runtime.app, settings.slack_app_token.get(), logger=_socket_log)
        handler.client.wss_uri = url  # the URL just issued: no second apps.connections.open
        await runtime.start()
        serving = await _start(server, listener)
        await metrics.start()
        await _until(stop, _connect(handler))
        if settle:
            _settle_memory()
        runtime.ready.set()
        log.info("connected to Slack over Socket Mode; health on port %s", port)
        await _wait_either(stop, serving)
    except _Stopped:
        log.info("stopped during start-up")
    finally:
        runtime.ready.clear()
        # Stop taking envelopes first, so nothing new is acknowledged while jobs drain.
        if handler is not None:
            with contextlib.suppress(Exception):
                await handler.close_async()
        await _stop_server(server, serving)
        if listener is not None:
            listener.close()
        await metrics.stop()
        await runtime.close()


class _MetricsServer:
    """GET /metrics on a listener of its own (bot.slack.app.create_metrics_asgi), beside the Slack port's server."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._listener: socket.socket | None = None
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None

    def bind(self) -> None:
        self._listener = _bind(self.host, self.port, setting="METRICS_PORT")

    async def start(self) -> None:
        assert self._listener is not None, "bind() first"
        config = uvicorn.Config(
            create_metrics_asgi(), host=self.host, port=self.port, lifespan="off", log_config=None, access_log=False
        )
        self._server = _Server(config)
        self._serving = await _start(self._server, self._listener)
        log.info("metrics on http://%s:%s/metrics", self.host, self.port)

    async def stop(self) -> None:
        await _stop_server(self._server, self._serving)
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def _settle_memory() -> None:
    """Move everything start-up made (imports, clients, the app) out of the garbage collector's sight.

    Those objects live as long as the process; left in the collector's generations, every full collection during a
    burst of requests walks all of them again (measured: a web process's ack p99 in a 200-share burst doubled when
    start-up made fewer long-lived objects, because full collections then came more often). A larger first
    threshold makes the collector run less often during a burst (p99 ~130 -> ~115 ms there; switching the
    collector off entirely measured no better). Only for the process `python -m bot run` owns, not for embedders.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _build(settings: Settings, role: str = "all") -> Runtime:
    """build_runtime, with the database's failure to open (its one line, from the store) for the operator."""
    try:
        return build_runtime(settings, role=role)
    except DatabaseUnavailable as exc:
        reason = str(exc)
        for secret in settings.secrets():
            reason = reason.replace(secret, "**********")
        raise StartupError(reason) from None
    except NotPrivate as exc:  # a file or folder of the bot's that others may read, and this user cannot tighten
        raise StartupError(str(exc)) from None
    except OSError as exc:  # the data folder (prepared recordings, speech waiting for upload) cannot be made
        where = exc.filename if exc.filename is not None else settings.data_path
        raise StartupError(
            f"Cannot use {str(where)!r}: {exc.strerror or exc}. Make sure the folder exists and is writable by this "
            "user, or set DATA_DIR to one that is."
        ) from None


async def check_bot_token(runtime: Runtime) -> None:
    """auth.test with SLACK_BOT_TOKEN; a refusal or an unreachable Slack becomes a StartupError."""
    url = runtime.settings.slack_api_url
    try:
        await _retrying(runtime.check_token)
    except SlackApiError as exc:
        error = _slack_error(exc)
        fix = _BOT_TOKEN_FIXES.get(error, "check SLACK_BOT_TOKEN and that the app is installed to the workspace")
        raise StartupError(f"Slack refused SLACK_BOT_TOKEN ({error}): {fix}.") from None
    except _NETWORK_ERRORS as exc:
        raise StartupError(
            f"Cannot reach Slack at {url} ({_reason(exc)}), after {CONNECT_RETRIES} retries: "
            "check the network and any proxy"
            + (", and SLACK_API_URL." if "slack.com" not in url else ".")
        ) from None


async def open_socket_url(runtime: Runtime, settings: Settings) -> str:
    """apps.connections.open with SLACK_APP_TOKEN: a refused token stops start-up instead of retrying forever."""
    assert settings.slack_app_token is not None
    token = settings.slack_app_token.get()
    try:
        response = await _retrying(lambda: runtime.client.apps_connections_open(app_token=token))
    except SlackApiError as exc:
        error = _slack_error(exc)
        fix = _APP_TOKEN_FIXES.get(error, "check SLACK_APP_TOKEN and that Socket Mode is on for this app")
        raise StartupError(f"Slack refused SLACK_APP_TOKEN ({error}): {fix}.") from None
    except _NETWORK_ERRORS as exc:
        raise StartupError(
            f"Cannot reach Slack at {settings.slack_api_url} to open Socket Mode ({_reason(exc)}): "
            "check the network and any proxy."
        ) from None
    return str(response["url"])


async def _connect(handler: object) -> None:
    try:
        await asyncio.wait_for(handler.connect_async(), SOCKET_CONNECT_TIMEOUT)  # type: ignore[attr-defined]
    except TimeoutError:
        raise StartupError(
            f"Slack issued a Socket Mode URL but its WebSocket did not connect within {SOCKET_CONNECT_TIMEOUT:g} s: "
            "check that outbound WebSocket (wss://) traffic is allowed, or use HTTP mode (run --http)."
        ) from None


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, retried while Slack cannot be reached; a refusal (SlackApiError) is final."""

    def log_retry(retry: int, exc: Exception, seconds: float) -> None:
        log.warning("Slack unreachable (%s); trying again in %g s", _reason(exc), seconds)

    return await retrying(
        call,
        attempts=CONNECT_RETRIES + 1,
        delay=lambda retry: backoff_delay(retry, base=CONNECT_BACKOFF_BASE, cap=CONNECT_BACKOFF_MAX, draw=1.0),
        retry_on=lambda exc: isinstance(exc, _NETWORK_ERRORS),
        on_retry=log_retry,
    )


def _slack_error(exc: SlackApiError) -> str:
    response = exc.response
    error = response.get("error") if response is not None else None
    if error:
        return str(error)
    status = getattr(response, "status_code", None)
    return f"HTTP {status}" if status else "no answer"


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _until(stop: asyncio.Event, step: Awaitable[T]) -> T:
    """Await `step` unless `stop` is set first; then cancel it and raise _Stopped."""
    if stop.is_set():
        if asyncio.iscoroutine(step):
            step.close()
        raise _Stopped
    task = asyncio.ensure_future(step)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise _Stopped
    return task.result()


def _bind(host: str, port: int, setting: str = "PORT") -> socket.socket:
    """Bind the listening socket here, so a port in use is one line naming it (uvicorn would sys.exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"Port {port} is already in use on {host}: stop whatever listens there, or set {setting} "
                + ("(or pass --port) " if setting == "PORT" else "")
                + "to a free port."
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(f"Not allowed to listen on port {port}: use a port above 1023 ({setting}).") from None
        where = "PORT and --host" if setting == "PORT" else f"{setting} and METRICS_HOST"
        raise StartupError(f"Cannot listen on {host}:{port} ({exc.strerror}): check {where}.") from None
    sock.set_inheritable(True)
    return sock


def _server(runtime: Runtime, host: str, port: int, *, slack: bool) -> _Server:
    config = uvicorn.Config(
        create_asgi(runtime, slack=slack),
        host=host,
        port=port,
        lifespan="off",
        # No log_config: uvicorn's loggers propagate to ours, so its lines are scrubbed and formatted too.
        log_config=None,
        access_log=False,
        # Slack waits 3 s; a deep backlog answered late is worse than a fast 503.
        backlog=2048,
    )
    return _Server(config)


async def _start(server: _Server, listener: socket.socket) -> asyncio.Task[None]:
    listener.listen(server.config.backlog)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    return serving


async def _stop_server(server: _Server | None, serving: asyncio.Task[None] | None) -> None:
    if server is None:
        return
    server.should_exit = True
    if serving is not None:
        await asyncio.gather(serving, return_exceptions=True)


async def _wait_either(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
