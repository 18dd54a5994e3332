"""The state every endpoint of the Slack stand-in shares, its HTTP server, and how tests wait on it.

One re-entrant lock guards all state and its condition is notified on every recorded change, so tests (in
any thread or event loop) wait for effects instead of sleeping. The concern modules (webapi, filehost, oauth_flow,
socket_mode, interactions, content, faults) extend StandInCore; bot.testing.standin_slack composes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

from aiohttp import web

from bot.testing.standin_slack.common import (
    DEFAULT_APP_ID,
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_ID,
    DEFAULT_BOT_TOKEN,
    DEFAULT_BOT_USER_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_SIGNING_SECRET,
    DEFAULT_TEAM_DOMAIN,
    DEFAULT_TEAM_ID,
    DEFAULT_TEAM_NAME,
    Call,
    FileRequest,
    JsonDict,
    OutageRequest,
    ResponseURLPost,
    Workspace,
    _Failure,
)


class StandInCore:
    """The stand-in's state, server thread, workspaces and recordings; the endpoints live in the subclasses."""

    def __init__(
        self,
        bot_token: str = DEFAULT_BOT_TOKEN,
        app_token: str | None = None,
        signing_secret: str = DEFAULT_SIGNING_SECRET,
        team_id: str = DEFAULT_TEAM_ID,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        *,
        app_id: str = DEFAULT_APP_ID,
        team_domain: str = DEFAULT_TEAM_DOMAIN,
        post_limit: tuple[float, float] | None = None,
    ):
        """post_limit: (per_second, burst) for chat.postMessage per channel (see limit_posts); None: no limit."""
        self.app_token = app_token or DEFAULT_APP_TOKEN
        self.signing_secret = signing_secret
        self.app_id = app_id
        self.url = ""
        self.api_url = ""
        # OAuth: the app's credentials and Redirect URLs (OAuth & Permissions); see configure_oauth.
        self.client_id = DEFAULT_CLIENT_ID
        self.client_secret = DEFAULT_CLIENT_SECRET
        self.redirect_urls: list[str] = []
        # Where Slack POSTs events in HTTP mode (deliver_event); None: Socket Mode envelopes.
        self.request_url: str | None = None

        # Workspaces by team id; tokens -> team id. The constructor's workspace is the default one.
        self._default_team = team_id
        self._teams: dict[str, Workspace] = {
            team_id: Workspace(team_id, team_domain, DEFAULT_TEAM_NAME, bot_user_id, bot_id, [bot_token])
        }
        self._token_teams: dict[str, str] = {bot_token: team_id}
        # Tokens of workspaces that uninstalled the app: "token_revoked" for good (reset() keeps them).
        self._uninstalled_tokens: set[str] = set()
        self._codes: dict[str, JsonDict] = {}  # authorization code -> what was approved
        self._acting = threading.local()  # the workspace a Web API call or a `with workspace()` block acts in
        self._next_installer: tuple[str, str, str] | None = None  # (team_id, team_name, user) for the next approval
        self._deny_next = False
        self.installs: list[JsonDict] = []  # every completed oauth.v2.access (no secrets)

        # One re-entrant lock guards all state; the condition is notified on every recorded change.
        self._cond = threading.Condition(threading.RLock())
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._ids = itertools.count(1)
        self._files: dict[str, JsonDict] = {}
        self._channels: dict[str, JsonDict] = {}
        self._dms: dict[tuple[str, str], str] = {}  # (team id, user id) -> the app's DM channel with that user
        self._channel_teams: dict[str, str] = {}  # channel -> the workspace it belongs to, once known
        self._post_limit: tuple[float, float] | None = None
        self._clear_recordings()
        if post_limit is not None:
            self.limit_posts(*post_limit)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._release_stalls: asyncio.Event | None = None
        self._halt: asyncio.Event | None = None  # set on stop: wakes calls held by delay_next
        self._stopping = False

    # workspaces ---------------------------------------------------------------------------------------

    @property
    def _ws(self) -> Workspace:
        """The workspace being acted in: a call's token's, a `with workspace()` block's, else the default."""
        team = getattr(self._acting, "team", None)
        return self._teams[team or self._default_team]

    @property
    def team_id(self) -> str:
        return self._ws.team_id

    @property
    def team_domain(self) -> str:
        return self._ws.team_domain

    @property
    def team_name(self) -> str:
        return self._ws.team_name

    @property
    def bot_user_id(self) -> str:
        return self._ws.bot_user_id

    @property
    def bot_id(self) -> str:
        return self._ws.bot_id

    @property
    def bot_token(self) -> str:
        """The bot token of the workspace acted in (the newest issued there)."""
        return self._ws.bot_token

    @contextlib.contextmanager
    def workspace(self, team_id: str) -> Iterator[Workspace]:
        """Make this thread's helpers (add_file, user_message, slash_command, press...) act in `team_id`."""
        with self._cond:
            ws = self._teams[team_id]
        previous = getattr(self._acting, "team", None)
        self._acting.team = team_id
        try:
            yield ws
        finally:
            self._acting.team = previous

    def workspaces(self) -> list[Workspace]:
        """Every workspace known here (installed or not)."""
        with self._cond:
            return [copy.deepcopy(ws) for ws in self._teams.values()]

    def add_workspace(
        self,
        team_id: str,
        *,
        team_name: str | None = None,
        team_domain: str | None = None,
        bot_token: str | None = None,
    ) -> Workspace:
        """Install the app into a workspace directly (as an admin's "Install to Workspace" does); returns it."""
        with self._cond:
            ws = self._teams.get(team_id)
            if ws is None:
                suffix = hashlib.sha256(team_id.encode()).hexdigest()[:6].upper()
                ws = Workspace(
                    team_id, team_domain or team_id.lower(), team_name or f"Workspace {team_id}",
                    "U0BOT" + suffix, "B0BOT" + suffix,
                )
                self._teams[team_id] = ws
            token = bot_token or f"xoxb-{team_id}-{secrets.token_hex(6)}-{secrets.token_urlsafe(18)}"
            ws.tokens.append(token)
            self._token_teams[token] = team_id
            return copy.deepcopy(ws)

    def _team_of(self, token: str) -> str | None:
        step = self._function_tokens.get(token)  # a Workflow Builder step's own token (functions.py)
        return self._token_teams.get(token) or (step["team"] if step else None)

    def _clear_recordings(self) -> None:
        self.calls: list[Call] = []
        self.file_requests: list[FileRequest] = []
        self.responses: list[ResponseURLPost] = []
        self.acks: list[JsonDict] = []
        self.envelopes: list[JsonDict] = []
        self.stalled: list[str] = []
        self.views: dict[str, JsonDict] = {}
        # views.publish: each user's current Home tab (user id -> view).
        self.home_views: dict[str, JsonDict] = {}
        self.connection_count = 0
        self._messages: dict[str, dict[str, JsonDict]] = {}
        self._ephemerals: list[JsonDict] = []
        self._reactions: dict[tuple[str, str], list[str]] = {}
        self._triggers: dict[str, JsonDict] = {}
        self._response_urls: dict[str, JsonDict] = {}
        self._uploads: dict[str, JsonDict] = {}
        self._tickets: set[str] = set()
        # Workflow Builder steps (functions.py): executions by id, the steps' own tokens, completions accepted.
        self._executions: dict[str, JsonDict] = {}
        self._function_tokens: dict[str, JsonDict] = {}
        self.completions: list[JsonDict] = []
        # files.completeUploadExternal answering each file with its id and title only (as Slack's reference once
        # showed it) instead of the whole file object: a client needing the permalink must ask files.info.
        self.brief_upload_answers = False
        self._failures: dict[str, list[_Failure]] = {}
        self._pending: list[JsonDict] = []
        self._stalls: dict[str, int] = {}
        self._file_failures: dict[str, list[int]] = {}
        # Faults: outages, slow methods, permanent error states and the posting limit's buckets.
        self._outage: str | None = None
        self.outage_requests: list[OutageRequest] = []
        self._delays: dict[str, list[float]] = {}
        self.delayed_calls: list[Call] = []
        self._removed_from: set[str] = set()
        self._archived: set[str] = set()
        self._deleted: set[tuple[str, str]] = set()
        self._dead_tokens: dict[str, str] = {}  # token -> the error every call with it answers
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, monotonic time)
        self.post_refusals = 0

    # lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Serve on 127.0.0.1 at a free port; returns when the port is listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:  # reported to start() in the caller's thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._stopping = False
        self._thread = threading.Thread(target=run, name="slack-standin", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close sockets and the server; wakes every waiter."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._stopping = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=15)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(15)
            self._thread = None
            self._loop = None
            self._notify()

    async def _startup(self) -> None:
        # Every host Slack uses (slack.com, files.slack.com, hooks, wss) on one port, so one outage takes all of
        # them down. Handlers: faults (the gate), webapi, filehost, oauth_flow, interactions, socket_mode.
        app = web.Application(client_max_size=1024**3, middlewares=[self._outage_gate])
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/files-pri/{key}/download/{name:.+}", self._serve_file)
        app.router.add_get("/files-pri/{key}/{name:.+}", self._serve_file)
        app.router.add_get("/", self._sign_in_page)
        app.router.add_get("/oauth/v2/authorize", self._authorize_page)
        app.router.add_post("/upload/v1/{ticket}", self._upload)
        app.router.add_post("/commands/{team}/{n}/{secret}", self._response_url)
        app.router.add_get("/link/", self._socket)
        self._release_stalls = asyncio.Event()
        self._halt = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.url}/api/"

    async def _shutdown(self) -> None:
        if self._release_stalls is not None:
            self._release_stalls.set()
        if self._halt is not None:
            self._halt.set()
        await self._close_sockets(None)
        if self._runner is not None:
            await self._runner.cleanup()

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the Slack stand-in is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("call this from outside the stand-in's own thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # recording and waiting ----------------------------------------------------------------------------

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile: nobody is waiting there
                loop.call_soon_threadsafe(event.set)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
        """Block until predicate() is truthy (re-checked on every call, ack, file request...) or timeout."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: predicate() or self._stopping, timeout)) and bool(
                predicate()
            )

    async def wait_for_async(self, predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
        """wait_for without blocking the caller's event loop (for tests whose app runs on that loop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = asyncio.Event()
        entry = (loop, event)
        with self._cond:
            self._async_waiters.append(entry)
        try:
            while True:
                event.clear()
                with self._cond:
                    if predicate():
                        return True
                remaining = deadline - loop.time()
                if remaining <= 0 or self._stopping:
                    return False
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    with self._cond:
                        return bool(predicate())
        finally:
            with self._cond:
                self._async_waiters.remove(entry)

    def calls_to(self, method: str) -> list[JsonDict]:
        """The params of every call to a Web API method, oldest first."""
        with self._cond:
            return [copy.deepcopy(c.params) for c in self.calls if c.method == method]

    def messages(self, channel: str) -> list[JsonDict]:
        """Every message in a channel as it is now (posts with later updates applied), in ts order."""
        with self._cond:
            stored = self._messages.get(channel, {})
            return [copy.deepcopy(stored[ts]) for ts in sorted(stored, key=float)]

    def thread(self, channel: str, ts: str) -> list[JsonDict]:
        """The thread's parent (when known to the stand-in) followed by its replies, in order."""
        return [m for m in self.messages(channel) if m["ts"] == ts or m.get("thread_ts") == ts]

    def ephemerals(self, channel: str | None = None) -> list[JsonDict]:
        """Ephemeral messages posted (optionally in one channel)."""
        with self._cond:
            return [copy.deepcopy(m) for m in self._ephemerals if channel in (None, m["channel"])]

    def reactions(self, channel: str, ts: str) -> list[str]:
        """The names of the bot's reactions on a message."""
        with self._cond:
            return list(self._reactions.get((channel, ts), []))

    def file_content(self, file_id: str) -> bytes:
        """The bytes of a stored file (added or uploaded through files_upload_v2)."""
        with self._cond:
            return self._files[file_id]["content"]

    def reset(self) -> None:
        """Forget calls, messages, reactions, views, acks and injected failures; keep files and channels.

        Injected failures include every fault below: an outage ends, delays, revoked tokens, removed-from and
        archived channels and deleted messages are forgotten; a posting limit stays set with full buckets.
        """
        with self._cond:
            self._clear_recordings()
        self._notify()

    def _record_call(self, method: str, params: JsonDict, team: str | None = None) -> None:
        with self._cond:
            self.calls.append(Call(time.time(), method, params, team))
        self._notify()
