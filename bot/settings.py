"""Settings read from the environment, then `.env`; validated once, failing with every problem named."""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from bot.errors import ConfigError, OptionError
from bot.vocabulary import LANGUAGE_RULE, MODELS, check_language

TRTC_KEYS = ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TRTC_SDK_APP_ID")
SLACK_HTTP_KEYS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
SLACK_SOCKET_KEYS = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")
# Many workspaces (OAuth): these two replace SLACK_BOT_TOKEN; each workspace's token comes from its installation.
SLACK_OAUTH_KEYS = ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET")

DEFAULT_TRTC_ENDPOINT = "trtc.intl.tencentcloudapi.com"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
# VoiceClone is served only here on the international site (see FIELD-NOTES); TRTC_REGION_OVERRIDE=1 lifts it.
SUPPORTED_REGION = "ap-singapore"
CONSENT_MODES = ("ask", "attested")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SECRET_KEYS = frozenset(
    {
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "SLACK_CLIENT_SECRET",
        "TOKEN_ENCRYPTION_KEY",
    }
)
# Every setting the bot reads; .env.example lists each one (a test checks).
KNOWN_KEYS = (
    "TENCENTCLOUD_SECRET_ID",
    "TENCENTCLOUD_SECRET_KEY",
    "TRTC_SDK_APP_ID",
    "TRTC_ENDPOINT",
    "TRTC_REGION",
    "TRTC_REGION_OVERRIDE",
    "TRTC_TIMEOUT",
    "TRTC_MAX_RPS",
    "VOICECLONE_MODEL",
    "VOICECLONE_LANGUAGE",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_API_URL",
    "SLACK_POSTS_PER_SECOND",
    "SLACK_CLIENT_ID",
    "SLACK_CLIENT_SECRET",
    "TOKEN_ENCRYPTION_KEY",
    "PORT",
    "METRICS_PORT",
    "METRICS_HOST",
    "DATABASE_URL",
    "LEASE_SECONDS",
    "REDIS_URL",
    "MAX_DOWNLOAD_MB",
    "WORKERS",
    "SHUTDOWN_GRACE_SECONDS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "ANSWER_TTL_HOURS",
    "JOB_TIMEOUT_SECONDS",
    "FFMPEG_TIMEOUT_SECONDS",
    "CONSENT",
    "CONSENT_TTL_HOURS",
    "RETENTION_DAYS",
    "DATA_DIR",
    "PREVIEW",
    "PREVIEW_TEXT",
    "ADMIN_USERS",
    "MAX_JOBS_PER_USER",
    "MAX_JOBS_PER_WORKSPACE",
    "SAYS_PER_MINUTE_PER_USER",
    "SAYS_PER_MINUTE_PER_WORKSPACE",
    "MAX_VOICES_PER_USER",
    "MAX_VOICES_PER_WORKSPACE",
    "ACCOUNT_VOICE_CAP",
    # Read by the command line, not by Settings: which settings file to read.
    "VOICECLONE_ENV_FILE",
)
# Names with these prefixes are ours: an unknown one is a typo to report, never something to ignore.
OUR_PREFIXES = ("SLACK_", "TRTC_", "TENCENTCLOUD_", "VOICECLONE_")
# Where to find each required value, for the "missing" line.
WHERE = {
    "TENCENTCLOUD_SECRET_ID": "the SecretId of a Tencent Cloud API key (CAM console -> API keys)",
    "TENCENTCLOUD_SECRET_KEY": "the SecretKey of the same API key",
    "TRTC_SDK_APP_ID": "the SDKAppID of the TRTC application with voice cloning enabled (TRTC console)",
    "SLACK_BOT_TOKEN": "the Bot User OAuth Token, xoxb-... (Slack app -> OAuth & Permissions)",
    "SLACK_SIGNING_SECRET": "the Signing Secret (Slack app -> Basic Information) for HTTP mode, "
    "or set SLACK_APP_TOKEN to use Socket Mode",
    "SLACK_APP_TOKEN": "an app-level token, xapp-..., with connections:write (Slack app -> Basic Information)",
    "SLACK_CLIENT_ID": "the Client ID (Slack app -> Basic Information -> App Credentials), for OAuth installs",
    "SLACK_CLIENT_SECRET": "the Client Secret (Slack app -> Basic Information -> App Credentials)",
    "TOKEN_ENCRYPTION_KEY": "a Fernet key, which encrypts each workspace's bot token in the database; make one with "
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"',
}


class Secret:
    """A string that never prints: repr and str are masked, `.get()` reveals it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        """The secret itself; pass it only to the service it belongs to."""
        return self._value

    def __repr__(self) -> str:
        return "'**********'"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything the bot is configured with."""

    tencent_secret_id: Secret | None = None
    tencent_secret_key: Secret | None = None
    trtc_sdk_app_id: int | None = None
    trtc_endpoint: str = DEFAULT_TRTC_ENDPOINT
    trtc_region: str = "ap-singapore"
    trtc_timeout: float = 30.0
    # Per action: at most this many VoiceClone calls, and as many TextToSpeech calls, in any second (Tencent counts
    # each action in its own window, 20/s each).
    trtc_max_rps: int = 20
    # Slack's limit on chat.postMessage in one channel (about 1 a second); the sender paces each channel to it.
    slack_posts_per_second: float = 0.95
    voiceclone_model: str | None = None
    voiceclone_language: str | None = None
    # Not in repr: a password in the URL must never print (database_shown masks it).
    database_url: str = field(default="sqlite:///voiceclone.db", repr=False)
    # A replica holds a running job this long without renewing it; then another replica takes it over.
    lease_seconds: float = 30.0
    # redis:// or rediss://: one TRTC_MAX_RPS per action for every replica sharing it; None: in-process limiters.
    redis_url: str | None = field(default=None, repr=False)
    slack_bot_token: Secret | None = None
    slack_signing_secret: Secret | None = None
    slack_app_token: Secret | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    # Set both for many workspaces (OAuth installs); then slack_bot_token is not used.
    slack_client_id: str | None = None
    slack_client_secret: Secret | None = None
    # OAuth: the Fernet key(s) the installations' tokens are stored encrypted with (the first encrypts; any after
    # it still decrypt, for rotating the key).
    token_encryption_key: Secret | None = None
    port: int = 3000
    # GET /metrics is served here, on a server of its own: never on PORT, where Slack's requests arrive. Loopback
    # unless METRICS_HOST says otherwise (0.0.0.0 in a container, for a scraper on the same network).
    metrics_port: int = 9464
    metrics_host: str = "127.0.0.1"
    max_download_bytes: int = 100 * 1024 * 1024
    workers: int = 8
    shutdown_grace: float = 30.0
    trtc_region_override: bool = False
    log_level: str = "INFO"
    log_format: str = "text"
    # How long the outbox keeps trying to deliver an answer (Slack outages of any length, up to this).
    answer_ttl_hours: float = 24.0
    # One attempt at a job (download, convert, clone) may take this long; 3 timed-out attempts end the job.
    job_timeout: float = 900.0
    # ffmpeg's wall-clock limit per file: a hung decoder is killed after this.
    ffmpeg_timeout: float = 120.0
    # "ask": the uploader confirms in Slack before anything is cloned; "attested": the workspace collects consent
    # outside Slack and drops are cloned at once.
    consent: str = "ask"
    consent_ttl_hours: float = 24.0
    # Job rows, transcripts and Slack file objects are deleted this long after the job ends (the audit stays).
    retention_days: float = 30.0
    # Where recordings waiting for consent are kept (mode 0600); default: beside the SQLite database.
    data_dir: str | None = None
    # Speak a preview of every new voice into its thread (TextToSpeech; one more TRTC request per clone).
    preview: bool = True
    # What a new voice says in its preview (default: a sentence in the voice's language); 1-255 characters.
    preview_text: str | None = None
    # Who may see, speak with, rename and forget anyone's voices in a workspace, as given: T...:U... (that user, in
    # that workspace only) or a bare U... (one workspace: SLACK_BOT_TOKEN). admins_in() answers for one workspace.
    admin_users: frozenset[str] = frozenset()
    # Fair use (bot.work.quotas; 0 turns a limit off). Requests waiting or running at once (clones and speech):
    max_jobs_per_user: int = 10
    max_jobs_per_workspace: int = 500
    # Speech requests (`/clone say`, "Speak in my voice", the workflow step) in any 60 s:
    says_per_minute_per_user: int = 10
    says_per_minute_per_workspace: int = 120
    # Voices held in the bot's library (a forgotten voice frees its place):
    max_voices_per_user: int = 10
    max_voices_per_workspace: int = 1000
    # The Tencent account's voice cap as agreed with Tencent (0: unknown). Voices cannot be deleted, so forgotten
    # ones still count; the operator is warned from 90% of it and new clones are refused at it.
    account_voice_cap: int = 0

    def admins_in(self, team_id: str | None) -> frozenset[str]:
        """The user IDs ADMIN_USERS makes admins of workspace `team_id`: its own T...:U... entries, and the bare
        U... ones (allowed only with one workspace). An admin of one workspace is no admin of another."""
        found = set()
        for entry in self.admin_users:
            team, _, user = entry.rpartition(":")
            if not team or team == team_id:
                found.add(user)
        return frozenset(found)

    @property
    def trtc_url(self) -> str:
        """The endpoint as a full URL (https unless a scheme was given)."""
        if "://" in self.trtc_endpoint:
            return self.trtc_endpoint.rstrip("/")
        return f"https://{self.trtc_endpoint}"

    @property
    def postgres(self) -> bool:
        """True when DATABASE_URL names a PostgreSQL server (several processes may share it)."""
        return is_postgres_url(self.database_url)

    @property
    def oauth(self) -> bool:
        """True when the app installs into many workspaces (SLACK_CLIENT_ID and SLACK_CLIENT_SECRET set)."""
        return bool(self.slack_client_id and self.slack_client_secret)

    @property
    def database_path(self) -> str:
        """The SQLite file (or ':memory:') named by DATABASE_URL."""
        return sqlite_path(self.database_url)

    @property
    def database_shown(self) -> str:
        """DATABASE_URL as logs may show it: any password masked."""
        return masked_url(self.database_url)

    @property
    def data_path(self) -> Path:
        """The bot's private data folder: DATA_DIR, else `data/` beside the SQLite file (or the working folder)."""
        if self.data_dir:
            return Path(self.data_dir)
        if self.postgres:
            return Path("data").absolute()
        database = self.database_path
        base = Path(tempfile.gettempdir()) / "voiceclone-bot" if database == ":memory:" else Path(database).parent
        return base / "data"

    def secrets(self) -> list[str]:
        """Every configured secret value, for log scrubbing."""
        values = [
            self.tencent_secret_key,
            self.slack_bot_token,
            self.slack_signing_secret,
            self.slack_app_token,
            self.slack_client_secret,
            self.token_encryption_key,
        ]
        found = [s.get() for s in values if s]
        if self.token_encryption_key and "," in self.token_encryption_key.get():
            found += [k.strip() for k in self.token_encryption_key.get().split(",") if k.strip()]  # each key alone
        # A password in REDIS_URL or DATABASE_URL (scheme://user:pw@host) is a secret; the rest of the URL is not.
        for url in (self.redis_url, self.database_url):
            try:
                password = urlsplit(url).password if url else None
            except ValueError:
                password = None
            if password:
                found.append(password)
        return found

    @property
    def redis_url_shown(self) -> str | None:
        """REDIS_URL as logs may show it: any password masked."""
        return masked_url(self.redis_url) if self.redis_url else None


def masked_url(url: str) -> str:
    """`url` with the password of its user part replaced by asterisks."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be parsed; hidden)"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:**********@{host}").geturl()


def is_postgres_url(url: str) -> bool:
    """postgresql:// or postgres:// (psycopg and libpq accept both)."""
    return url.startswith(("postgresql://", "postgres://"))


def check_database_url(url: str) -> None:
    """Raise ValueError saying what is wrong with DATABASE_URL."""
    if is_postgres_url(url):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            raise ValueError("expected postgresql://user[:password]@host[:port]/database") from None
        if not parts.path.strip("/") and not parts.hostname:
            raise ValueError("expected postgresql://user[:password]@host[:port]/database")
        return
    sqlite_path(url)


def sqlite_path(url: str) -> str:
    """Map `sqlite:///rel.db` / `sqlite:////abs.db` / `sqlite://` to a path sqlite3 can open."""
    if not url.startswith("sqlite:"):
        raise ValueError("expected sqlite:///file.db or postgresql://user@host/database")
    rest = url[len("sqlite:") :]
    if rest in ("", "//", "///:memory:", "//:memory:"):
        return ":memory:"
    if not rest.startswith("///"):
        raise ValueError("expected sqlite:///relative.db or sqlite:////absolute/path.db")
    return rest[3:]


def read_environment(env_file: str | os.PathLike[str] | None = ".env") -> dict[str, str]:
    """The settings file (if it exists), then the real environment on top; values stripped."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    # The real environment wins over .env.
    values.update(os.environ)
    return {k: v.strip() for k, v in values.items()}


def unknown_keys(env: Mapping[str, str]) -> dict[str, str]:
    """Keys that look like the bot's settings but are none of them, each with the nearest valid name."""
    found: dict[str, str] = {}
    for key in env:
        if key in KNOWN_KEYS:
            continue
        ours = key.upper().startswith(OUR_PREFIXES)
        # Other names only when they are very close to one of ours (LOG_LEVL, DATABASE_URI): PATH or HOME are not.
        near = difflib.get_close_matches(key.upper(), KNOWN_KEYS, n=1, cutoff=0.6 if ours else 0.85)
        if ours or near:
            hint = f": did you mean {near[0]}?" if near else " (every setting is listed in .env.example)"
            found[key] = f"is not a setting of this bot{hint}"
    return found


def slack_configured(env: Mapping[str, str]) -> bool:
    """True when any SLACK_* variable has a value: then a bare `python -m bot` means "run the bot"."""
    return any(key.upper().startswith("SLACK_") and value for key, value in env.items())


def run_requirements(env: Mapping[str, str], *, http: bool = False) -> tuple[bool, tuple[str, ...]]:
    """(socket_mode, required keys) for running the bot: Socket Mode when SLACK_APP_TOKEN is set and not --http.

    OAuth (either SLACK_CLIENT_ID or SLACK_CLIENT_SECRET set: then both are required) replaces SLACK_BOT_TOKEN with
    each workspace's installation. Events still come over Socket Mode (SLACK_APP_TOKEN) or HTTP (SLACK_SIGNING_SECRET);
    the install pages are served over HTTP on PORT in both, so in Socket Mode PORT must be reachable by installers.
    """
    socket_mode = bool(env.get("SLACK_APP_TOKEN", "").strip()) and not http
    keys = SLACK_SOCKET_KEYS if socket_mode else SLACK_HTTP_KEYS
    if any(env.get(key, "").strip() for key in SLACK_OAUTH_KEYS):
        keys = (*(k for k in keys if k != "SLACK_BOT_TOKEN"), *SLACK_OAUTH_KEYS)
    return socket_mode, (*TRTC_KEYS, *keys)


def _admin_entry(entry: str) -> bool:
    """T...:U... (a user in one workspace) or a bare U.../W... (one workspace only): Slack IDs, upper case."""
    team, colon, user = entry.rpartition(":")
    user_ok = user[:1] in ("U", "W") and user[1:].isalnum() and user.isupper()
    return user_ok and (not colon or (team[:1] == "T" and team[1:].isalnum() and team.isupper()))


def _fernet_keys(value: str) -> list[str]:
    """The comma-separated Fernet keys in `value`; [] when any is not one (cryptography imported only then)."""
    from cryptography.fernet import Fernet

    keys = [k.strip() for k in value.split(",") if k.strip()]
    try:
        for key in keys:
            Fernet(key)
    except (ValueError, TypeError):
        return []
    return keys


def _shown(key: str, value: str) -> str:
    """A value as a problem may quote it: secrets never."""
    return "(value hidden)" if key in SECRET_KEYS else repr(value)


def load_settings(
    require: Iterable[str] = (),
    *,
    env_file: str | os.PathLike[str] | None = ".env",
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read and validate settings; raise ConfigError naming every missing, invalid and unknown key at once."""
    env = dict(environ) if environ is not None else read_environment(env_file)
    problems: dict[str, str] = {}

    def text(key: str) -> str | None:
        value = env.get(key, "")
        return value or None

    def secret(key: str) -> Secret | None:
        value = text(key)
        return Secret(value) if value else None

    def integer(key: str, default: int | None, low: int = 0, high: int | None = None) -> int | None:
        value = text(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            problems[key] = f"must be an integer, got {_shown(key, value)}"
            return default
        if number < low or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            problems[key] = f"must be {bounds}, got {number}"
            return default
        return number

    def number(key: str, default: float) -> float:
        value = text(key)
        if value is None:
            return default
        try:
            result = float(value)
        except ValueError:
            problems[key] = f"must be a number, got {value!r}"
            return default
        if not result > 0 or result == float("inf"):
            problems[key] = f"must be greater than zero, got {value!r}"
            return default
        return result

    def flag(key: str) -> bool:
        value = (text(key) or "0").lower()
        if value not in ("0", "1", "true", "false", "yes", "no"):
            problems[key] = f"must be 1 or 0, got {value!r}"
            return False
        return value in ("1", "true", "yes")

    for key in require:
        if not text(key):
            where = WHERE.get(key)
            problems[key] = "is missing: set it in .env" + (f" to {where}" if where else "")

    endpoint = text("TRTC_ENDPOINT") or DEFAULT_TRTC_ENDPOINT
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems["TRTC_ENDPOINT"] = f"must be a host name or an http(s):// URL, got {endpoint!r}"

    slack_api_url = text("SLACK_API_URL") or DEFAULT_SLACK_API_URL
    parts = urlsplit(slack_api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems["SLACK_API_URL"] = f"must be an http(s):// URL, got {slack_api_url!r}"
    elif not slack_api_url.endswith("/"):
        slack_api_url += "/"

    model = text("VOICECLONE_MODEL")
    if model and model not in MODELS:
        problems["VOICECLONE_MODEL"] = f"must be one of {', '.join(MODELS)}, got {model!r}"

    language = text("VOICECLONE_LANGUAGE")
    if language:
        try:
            language = check_language(language)
        except OptionError:
            problems["VOICECLONE_LANGUAGE"] = f"must be {LANGUAGE_RULE}, got {language!r}"

    region_override = flag("TRTC_REGION_OVERRIDE")
    region = text("TRTC_REGION") or SUPPORTED_REGION
    if region != SUPPORTED_REGION and not region_override:
        problems["TRTC_REGION"] = (
            f"must be {SUPPORTED_REGION} (the only region serving VoiceClone), got {region!r}; "
            "set TRTC_REGION_OVERRIDE=1 as well if you know this region serves it"
        )

    database_url = text("DATABASE_URL") or "sqlite:///voiceclone.db"
    try:
        check_database_url(database_url)
    except ValueError as exc:
        problems["DATABASE_URL"] = f"{exc}, got {masked_url(database_url)!r}"

    redis_url = text("REDIS_URL")
    if redis_url:
        try:
            parts = urlsplit(redis_url)
            valid = parts.scheme in ("redis", "rediss") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            valid = False
        if not valid:
            problems["REDIS_URL"] = (
                f"must be a redis:// or rediss:// URL with a host, got {masked_url(redis_url)!r}"
                if "://" in redis_url
                else "must be a redis:// or rediss:// URL with a host (the value is hidden: it may hold a password)"
            )
            redis_url = None

    client_id, client_secret = text("SLACK_CLIENT_ID"), text("SLACK_CLIENT_SECRET")
    if bool(client_id) != bool(client_secret):
        missing = "SLACK_CLIENT_SECRET" if client_id else "SLACK_CLIENT_ID"
        problems.setdefault(
            missing,
            f"is missing: set it to {WHERE[missing]}: OAuth installs need both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET "
            "(or set neither and SLACK_BOT_TOKEN for one workspace)",
        )

    for key, prefix in (("SLACK_BOT_TOKEN", "xoxb-"), ("SLACK_APP_TOKEN", "xapp-")):
        value = text(key)
        if value and not value.startswith(prefix):
            problems[key] = f"must start with {prefix} (the value is hidden; check you copied the right token)"

    log_level = (text("LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        problems["LOG_LEVEL"] = f"must be one of {', '.join(LOG_LEVELS)}, got {text('LOG_LEVEL')!r}"
        log_level = "INFO"

    log_format = (text("LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        problems["LOG_FORMAT"] = f"must be text or json, got {log_format!r}"
        log_format = "text"

    consent = (text("CONSENT") or "ask").lower()
    if consent not in CONSENT_MODES:
        problems["CONSENT"] = f"must be one of {', '.join(CONSENT_MODES)}, got {text('CONSENT')!r}"
        consent = "ask"

    preview = (text("PREVIEW") or "on").lower()
    if preview not in ("on", "off"):
        problems["PREVIEW"] = f"must be on or off, got {text('PREVIEW')!r}"
    preview_text = text("PREVIEW_TEXT")
    if preview_text is not None and not 1 <= len(preview_text.strip()) <= 255:
        problems["PREVIEW_TEXT"] = f"must be 1 to 255 characters (TextToSpeech's limit), got {len(preview_text)}"
        preview_text = None
    admins = frozenset(u.strip() for u in (text("ADMIN_USERS") or "").split(",") if u.strip())
    bad_admins = sorted(u for u in admins if not _admin_entry(u))
    bare_admins = sorted(u for u in admins if ":" not in u and _admin_entry(u))
    if bad_admins:
        problems["ADMIN_USERS"] = (
            "must be Slack user IDs scoped to their workspace, T...:U... (or a bare U... or W... with one workspace), "
            f"comma-separated; got {', '.join(bad_admins)}"
        )
    elif bare_admins and (client_id or client_secret):
        problems["ADMIN_USERS"] = (
            "must name each admin's workspace as T...:U... when the app installs into many workspaces "
            f"(SLACK_CLIENT_ID is set): an admin of one workspace is no admin of another; got {', '.join(bare_admins)}"
        )

    token_key = text("TOKEN_ENCRYPTION_KEY")
    if token_key and not _fernet_keys(token_key):
        problems["TOKEN_ENCRYPTION_KEY"] = (
            "must be a Fernet key (44 characters of URL-safe base64; several comma-separated to rotate), the value is "
            'hidden; make one with python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"'
        )
    elif not token_key and client_id and client_secret:
        problems["TOKEN_ENCRYPTION_KEY"] = (
            f"is missing: set it to {WHERE['TOKEN_ENCRYPTION_KEY']}: OAuth installs keep every workspace's bot token "
            "in the database, encrypted with it"
        )

    port = integer("PORT", 3000, low=1, high=65535) or 3000
    metrics_port = integer("METRICS_PORT", 9464, low=1, high=65535) or 9464
    if metrics_port == port and "METRICS_PORT" not in problems:
        problems["METRICS_PORT"] = f"must differ from PORT ({port}): /metrics has a port of its own"

    settings = Settings(
        tencent_secret_id=secret("TENCENTCLOUD_SECRET_ID"),
        tencent_secret_key=secret("TENCENTCLOUD_SECRET_KEY"),
        trtc_sdk_app_id=integer("TRTC_SDK_APP_ID", None, low=1),
        trtc_endpoint=endpoint,
        trtc_region=region,
        trtc_timeout=number("TRTC_TIMEOUT", 30.0),
        trtc_max_rps=integer("TRTC_MAX_RPS", 20, low=1, high=1000) or 20,
        slack_posts_per_second=number("SLACK_POSTS_PER_SECOND", 0.95),
        voiceclone_model=model,
        voiceclone_language=language,
        database_url=database_url,
        lease_seconds=number("LEASE_SECONDS", 30.0),
        redis_url=redis_url,
        slack_bot_token=secret("SLACK_BOT_TOKEN"),
        slack_signing_secret=secret("SLACK_SIGNING_SECRET"),
        slack_app_token=secret("SLACK_APP_TOKEN"),
        slack_api_url=slack_api_url,
        slack_client_id=text("SLACK_CLIENT_ID"),
        slack_client_secret=secret("SLACK_CLIENT_SECRET"),
        token_encryption_key=secret("TOKEN_ENCRYPTION_KEY"),
        port=port,
        metrics_port=metrics_port,
        metrics_host=text("METRICS_HOST") or "127.0.0.1",
        max_download_bytes=(integer("MAX_DOWNLOAD_MB", 100, low=1) or 100) * 1024 * 1024,
        workers=integer("WORKERS", 8, low=1, high=256) or 8,
        shutdown_grace=number("SHUTDOWN_GRACE_SECONDS", 30.0),
        trtc_region_override=region_override,
        log_level=log_level,
        log_format=log_format,
        answer_ttl_hours=number("ANSWER_TTL_HOURS", 24.0),
        job_timeout=number("JOB_TIMEOUT_SECONDS", 900.0),
        ffmpeg_timeout=number("FFMPEG_TIMEOUT_SECONDS", 120.0),
        consent=consent,
        consent_ttl_hours=number("CONSENT_TTL_HOURS", 24.0),
        retention_days=number("RETENTION_DAYS", 30.0),
        data_dir=text("DATA_DIR"),
        preview=preview != "off",
        preview_text=preview_text.strip() if preview_text else None,
        admin_users=admins,
        max_jobs_per_user=integer("MAX_JOBS_PER_USER", 10, low=0) or 0,
        max_jobs_per_workspace=integer("MAX_JOBS_PER_WORKSPACE", 500, low=0) or 0,
        says_per_minute_per_user=integer("SAYS_PER_MINUTE_PER_USER", 10, low=0) or 0,
        says_per_minute_per_workspace=integer("SAYS_PER_MINUTE_PER_WORKSPACE", 120, low=0) or 0,
        max_voices_per_user=integer("MAX_VOICES_PER_USER", 10, low=0) or 0,
        max_voices_per_workspace=integer("MAX_VOICES_PER_WORKSPACE", 1000, low=0) or 0,
        account_voice_cap=integer("ACCOUNT_VOICE_CAP", 0, low=0) or 0,
    )
    problems.update(unknown_keys(env))
    if problems:
        raise ConfigError(problems)
    return settings
