"""The one way to start the bot against the stand-ins, for the tests, the benchmarks and the demo.

Two forms of the same thing: `InProcessBot` serves the bot on an event loop of the caller's (the demo's, or the
tests' harness thread), so a test can look at the runtime it built; `BotProcess` runs `python -m bot run` as a
child process (kill -9, restarts, the benchmarks' CPU and memory are those of a real process). Both wait for the
bot's own `GET /healthz` before they return.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from bot.settings import Settings
    from bot.testing.standin_slack import SlackStandIn
    from bot.testing.standin_trtc import TrtcStandIn


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bot_environ(
    slack: SlackStandIn, trtc: TrtcStandIn, db_path: str | os.PathLike[str], **extra: str
) -> dict[str, str]:
    """The settings of a bot aimed at these stand-ins, with their own credentials; `extra` overrides.

    /metrics gets a free port of its own (METRICS_PORT): bots started side by side never share one.
    """
    env = {
        "TENCENTCLOUD_SECRET_ID": trtc.secret_id,
        "TENCENTCLOUD_SECRET_KEY": trtc.secret_key,
        "TRTC_SDK_APP_ID": str(trtc.sdk_app_id or 1400000001),
        "TRTC_ENDPOINT": trtc.url,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "DATABASE_URL": f"sqlite:///{Path(db_path)}",
        "METRICS_PORT": str(free_port()),
    }
    env.update(extra)
    return env


class InProcessBot:
    """`serve_http` on the running event loop until `stop()`; `async with` returns once /healthz answers 200."""

    def __init__(self, settings: Settings, port: int | None = None, runtime: Runtime | None = None):
        self.settings = settings
        self.port = port or free_port()
        self.runtime = runtime
        self._stop = asyncio.Event()
        self._server: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The bot's Slack request URL."""
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def metrics_url(self) -> str:
        """The bot's Prometheus page (METRICS_PORT, on loopback unless METRICS_HOST says otherwise)."""
        return f"http://{self.settings.metrics_host}:{self.settings.metrics_port}/metrics"

    async def start(self, timeout: float = 15.0) -> InProcessBot:
        from bot.serve import serve_http  # the bot's heavy imports only when a bot is started

        self._server = asyncio.create_task(
            serve_http(self.settings, host="127.0.0.1", port=self.port, stop=self._stop, runtime=self.runtime)
        )
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._server.done():
                    self._server.result()
                    raise RuntimeError("the bot stopped before it was ready")
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/healthz")).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.02)
        raise RuntimeError("the bot did not become healthy")

    async def stop(self) -> None:
        """A graceful stop, as on SIGTERM."""
        self._stop.set()
        if self._server is not None:
            await self._server

    async def __aenter__(self) -> InProcessBot:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class BotProcess:
    """`python -m bot run` as a child process with `env` as its whole environment (no .env is read); each start
    logs to a file of its own in `workdir`."""

    def __init__(
        self, env: dict[str, str], workdir: Path, *, role: str = "all", http: bool = True, name: str = "bot"
    ):
        self.env = env
        self.workdir = Path(workdir).resolve()  # the bot runs in it: its paths must not be relative to ours
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.role = role
        self.http = http
        self.name = name
        self.port = 0
        self.metrics_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    @property
    def url(self) -> str:
        """The bot's Slack request URL (HTTP mode)."""
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def metrics_url(self) -> str:
        """The bot's Prometheus page (its own port, METRICS_PORT, on loopback)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def spawn(self, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start the process (on new ports: PORT, and METRICS_PORT for /metrics) without waiting for it."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.port = free_port()
        self.metrics_port = free_port()
        log = log or self.workdir / f"{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        env_file = self.workdir / "no.env"
        env_file.write_text("# empty: the bot's settings come from its environment\n")
        command = [sys.executable, "-m", "bot", "--env-file", str(env_file), "run"]
        if self.http:
            command += ["--http", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.role != "all":
            command += ["--role", self.role]
        # Socket Mode serves /healthz on PORT too; /metrics is on METRICS_PORT in every mode and role.
        env = {**self.env, "PORT": str(self.port), "METRICS_PORT": str(self.metrics_port)}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                command, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        return self.proc

    def start(self, timeout: float = 30.0, ready: Callable[[], bool] | None = None) -> BotProcess:
        """Spawn and return once /healthz answers 200 (or `ready()` holds, e.g. a Socket Mode connection)."""
        self.spawn()
        return self.wait_healthy(timeout, ready)

    def wait_healthy(self, timeout: float = 30.0, ready: Callable[[], bool] | None = None) -> BotProcess:
        """Return once the spawned process answers /healthz with 200 (or `ready()` holds); raise if it exits."""
        process = self.proc
        assert process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1) as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"the bot exited with {process.returncode}:\n{self.log_text()[-3000:]}")
                if ready is not None:
                    if ready():
                        return self
                else:
                    try:
                        if client.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200:
                            return self
                    except httpx.TransportError:
                        pass
                time.sleep(0.03)
        raise RuntimeError(f"the bot did not become healthy in {timeout:g} s:\n{self.log_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Kill the process if it is still running (clean-up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def log_text(self) -> str:
        """Everything every run of the process wrote (stdout and stderr)."""
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())
