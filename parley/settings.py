"""Every knob Parley reads from the environment, in one typed place.

The names are a contract (see DESIGN.md and the README's configuration table): outside
tools set them, so they are spelled out with explicit aliases rather than derived from a
prefix.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _secret_or_none(value: object) -> object:
    """A raw keys string as a SecretStr at once, so a validation error shows it masked;
    a blank one as unset."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        return SecretStr(value) if value.strip() else None
    return value


def _check_payload_keys(value: object) -> object:
    """Fail at start on malformed keys; the message never includes key material."""
    if isinstance(value, SecretStr):
        from parley.payload_codec import parse_payload_keys

        parse_payload_keys(value.get_secret_value())
    return value


# `PARLEY_PAYLOAD_KEYS` (parley/payload_codec.py). Validators run last to first: the raw value
# is masked before it is checked, so the check's error shows it as `**********`.
PayloadKeys = Annotated[
    SecretStr | None, BeforeValidator(_check_payload_keys), BeforeValidator(_secret_or_none)
]


def parse_duration(value: object, *, allow_zero: bool = False) -> timedelta:
    """Parse `90s`, `15m`, `24h`, `1.5h`, `250ms` or bare seconds into a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 15m, 24h)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"duration must be positive: {value!r}")
    return timedelta(seconds=seconds)


def _duration_or_zero(value: object) -> timedelta:
    return parse_duration(value, allow_zero=True)


def _off_is_zero(value: object) -> object:
    """A limit given as `off` (or `none`, or blank) is 0: no limit."""
    if isinstance(value, str) and value.strip().lower() in {"off", "none", ""}:
        return 0
    return value


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
DurationOrZero = Annotated[timedelta, BeforeValidator(_duration_or_zero)]
CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]
# A limit: 0 or `off` turns it off.
Limit = Annotated[int, BeforeValidator(_off_is_zero), Field(ge=0)]
UsdLimit = Annotated[float, BeforeValidator(_off_is_zero), Field(ge=0)]
RateLimit = Annotated[float, BeforeValidator(_off_is_zero), Field(ge=0)]
LimitDuration = Annotated[
    timedelta, BeforeValidator(lambda value: _duration_or_zero(_off_is_zero(value)))
]


class ModelOptions(BaseModel):
    """Messages API parameters for one model's requests, beside those Parley sets: e.g.
    `{"output_config": {"effort": "low"}}` for a quicker first token from a model that
    thinks by default. Models accept different ones; a parameter a model refuses fails
    its turns (the API answers 400), so set them per model."""

    model_config = ConfigDict(extra="forbid")

    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    service_tier: str | None = None

    def request_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Parley's configuration. Unset stores mean "start an embedded one" under `parley dev`."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", validation_alias=_env("PARLEY_HOST"))
    port: int = Field(8787, validation_alias=_env("PARLEY_PORT"))
    data_dir: Path = Field(Path(".parley"), validation_alias=_env("PARLEY_DATA_DIR"))

    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    db_pool_max: int = Field(10, validation_alias=_env("PARLEY_DB_POOL_MAX"))

    temporal_address: str | None = Field(None, validation_alias=_env("TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field("default", validation_alias=_env("TEMPORAL_NAMESPACE"))
    task_queue: str = Field("parley", validation_alias=_env("PARLEY_TASK_QUEUE"))

    # Temporal payload encryption (parley/payload_codec.py): `kid:base64key,...`, the first
    # key encrypts, all decrypt; unset, payloads are stored as they are. The gateway's
    # /codec endpoint (admin token) decodes them for Temporal's UI and CLI, which call it
    # from a browser on one of `codec_cors_origins`.
    payload_keys: PayloadKeys = Field(None, validation_alias=_env("PARLEY_PAYLOAD_KEYS"))
    codec_cors_origins: CsvList = Field(
        default_factory=list, validation_alias=_env("PARLEY_CODEC_CORS_ORIGINS")
    )

    anthropic_api_key: SecretStr | None = Field(None, validation_alias=_env("ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = Field(None, validation_alias=_env("ANTHROPIC_BASE_URL"))
    model: str = Field("claude-haiku-4-5", validation_alias=_env("PARLEY_MODEL"))
    # Prices (USD per million tokens, input and output) for models the built-in table
    # (parley/turn/pricing.py) lacks or prices wrong: `{"claude-x": [2, 10]}`.
    model_prices: dict[str, tuple[PositiveFloat, PositiveFloat]] = Field(
        default_factory=dict, validation_alias=_env("PARLEY_MODEL_PRICES")
    )
    # Extra request parameters by model id (a snapshot takes its id's): see ModelOptions.
    model_options: dict[str, ModelOptions] = Field(
        default_factory=dict, validation_alias=_env("PARLEY_MODEL_OPTIONS")
    )
    max_iterations: int = Field(20, ge=1, validation_alias=_env("PARLEY_MAX_ITERATIONS"))
    max_tokens: int = Field(4096, ge=1, validation_alias=_env("PARLEY_MAX_TOKENS"))

    tool_modules: CsvList = Field(
        default_factory=list, validation_alias=_env("PARLEY_TOOL_MODULES")
    )
    confirm_tools: CsvList = Field(
        default_factory=list, validation_alias=_env("PARLEY_CONFIRM_TOOLS")
    )
    approval_timeout: Duration = Field(
        timedelta(minutes=30), validation_alias=_env("PARLEY_APPROVAL_TIMEOUT")
    )
    # Rich interactions (forms, choice chips): how long one waits for the visitor (unset: the
    # approval timeout), and how many invalid submits one answers before RATE_LIMITED.
    interaction_timeout: Duration | None = Field(
        None, validation_alias=_env("PARLEY_INTERACTION_TIMEOUT")
    )
    interaction_max_invalid: int = Field(
        20, ge=1, le=1000, validation_alias=_env("PARLEY_INTERACTION_MAX_INVALID")
    )

    # The live lane (LISTEN/NOTIFY) carries tokens at once; the durable record (the signal
    # relay) gets them in batches this far apart, and a gateway's subscriber rests this long
    # after a poll that drained the stream. Without the live lane, use short batches.
    live_lane: bool = Field(True, validation_alias=_env("PARLEY_LIVE_LANE"))
    relay_batch_interval: Duration = Field(
        timedelta(milliseconds=500), validation_alias=_env("PARLEY_RELAY_BATCH_INTERVAL")
    )
    relay_poll_cooldown: Duration = Field(
        timedelta(milliseconds=50), validation_alias=_env("PARLEY_RELAY_POLL_COOLDOWN")
    )
    # Long-poll updates one gateway spends on one turn before it reads by query (a run allows
    # 2,000 updates: 150 leaves room for ten gateways watching one turn).
    relay_update_budget: int = Field(
        150, ge=0, le=1000, validation_alias=_env("PARLEY_RELAY_UPDATE_BUDGET")
    )
    # How long a finished turn stays readable for a client that re-attaches right away.
    turn_linger: DurationOrZero = Field(
        timedelta(seconds=60), validation_alias=_env("PARLEY_TURN_LINGER")
    )

    # Identity: with PARLEY_AUTH=jwt a connection's token names its principal (gateway/auth.py).
    auth: Literal["none", "jwt"] = Field("none", validation_alias=_env("PARLEY_AUTH"))
    auth_strict: bool = Field(False, validation_alias=_env("PARLEY_AUTH_STRICT"))
    jwt_secret: SecretStr | None = Field(None, validation_alias=_env("PARLEY_JWT_SECRET"))
    jwt_public_key: str | None = Field(None, validation_alias=_env("PARLEY_JWT_PUBLIC_KEY"))
    jwt_jwks_url: str | None = Field(None, validation_alias=_env("PARLEY_JWT_JWKS_URL"))
    jwt_issuer: str | None = Field(None, validation_alias=_env("PARLEY_JWT_ISSUER"))
    jwt_audience: str | None = Field(None, validation_alias=_env("PARLEY_JWT_AUDIENCE"))
    # An unknown `kid` refetches the JWKS at most this often.
    jwt_jwks_cooldown: DurationOrZero = Field(
        timedelta(seconds=30), validation_alias=_env("PARLEY_JWT_JWKS_COOLDOWN")
    )
    jwt_admin_role: str = Field("admin", validation_alias=_env("PARLEY_JWT_ADMIN_ROLE"))
    # A session nobody used for this long, or this old, is gone (its id answers "not found").
    session_idle_timeout: Duration = Field(
        timedelta(hours=24), validation_alias=_env("PARLEY_SESSION_IDLE_TIMEOUT")
    )
    session_max_age: Duration = Field(
        timedelta(days=7), validation_alias=_env("PARLEY_SESSION_MAX_AGE")
    )
    # `module:attr`, a callable org_id -> model API key (or None); default: ANTHROPIC_API_KEY.
    model_key_resolver: str | None = Field(None, validation_alias=_env("PARLEY_MODEL_KEY_RESOLVER"))

    demo: bool = Field(False, validation_alias=_env("PARLEY_DEMO"))
    # The built-in escalate_to_human tool (off: the model is not offered it; for deployments
    # with no human team to follow up).
    escalation: bool = Field(True, validation_alias=_env("PARLEY_ESCALATION"))
    admin_token: SecretStr | None = Field(None, validation_alias=_env("PARLEY_ADMIN_TOKEN"))
    # The admin API's own listener (unset: /admin is served on the public one), and the
    # limits an upload is held to: the body, parsing and chunking time, HTML nesting, chunks.
    admin_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("PARLEY_ADMIN_PORT"))
    admin_host: str = Field("127.0.0.1", validation_alias=_env("PARLEY_ADMIN_HOST"))
    admin_max_bytes: int = Field(
        10 * 1024 * 1024, ge=1, validation_alias=_env("PARLEY_ADMIN_MAX_BYTES")
    )
    admin_parse_timeout: Duration = Field(
        timedelta(seconds=30), validation_alias=_env("PARLEY_ADMIN_PARSE_TIMEOUT")
    )
    admin_max_html_depth: int = Field(
        1000, ge=1, validation_alias=_env("PARLEY_ADMIN_MAX_HTML_DEPTH")
    )
    admin_max_chunks: int = Field(10_000, ge=1, validation_alias=_env("PARLEY_ADMIN_MAX_CHUNKS"))
    rerank: Literal["lexical"] | None = Field(None, validation_alias=_env("PARLEY_RERANK"))
    embeddings: str | None = Field(None, validation_alias=_env("PARLEY_EMBEDDINGS"))
    grounding_results: int = Field(
        3, ge=0, le=20, validation_alias=_env("PARLEY_GROUNDING_RESULTS")
    )
    # Unregistered agents are refused unless this is off (`parley dev` turns it off).
    widget_auth_strict: bool = Field(True, validation_alias=_env("PARLEY_WIDGET_AUTH_STRICT"))
    org: str = Field("default", validation_alias=_env("PARLEY_ORG"))

    # Cost and abuse limits (README, "Limits"); 0 or `off` turns one off. Per socket and per
    # gateway process: frames, connections, idleness, anonymous HTTP reads. Shared by every
    # gateway (PostgreSQL):
    # sessions and turns per minute, daily budgets. The per-turn token budget rides in the
    # turn's input.
    turn_token_budget: Limit = Field(100_000, validation_alias=_env("PARLEY_TURN_TOKEN_BUDGET"))
    ws_frame_rate: RateLimit = Field(10.0, validation_alias=_env("PARLEY_WS_FRAME_RATE"))
    ws_frame_burst: int = Field(30, ge=1, validation_alias=_env("PARLEY_WS_FRAME_BURST"))
    ws_flood_window: Duration = Field(
        timedelta(seconds=5), validation_alias=_env("PARLEY_WS_FLOOD_WINDOW")
    )
    ws_connections_per_ip: Limit = Field(20, validation_alias=_env("PARLEY_WS_CONNECTIONS_PER_IP"))
    ws_idle_timeout: LimitDuration = Field(
        timedelta(minutes=10), validation_alias=_env("PARLEY_WS_IDLE_TIMEOUT")
    )
    http_requests_per_ip_per_minute: Limit = Field(
        120, validation_alias=_env("PARLEY_HTTP_REQUESTS_PER_IP_PER_MINUTE")
    )
    sessions_per_ip_per_minute: Limit = Field(
        20, validation_alias=_env("PARLEY_SESSIONS_PER_IP_PER_MINUTE")
    )
    turns_per_session_per_minute: Limit = Field(
        10, validation_alias=_env("PARLEY_TURNS_PER_SESSION_PER_MINUTE")
    )
    turns_per_ip_per_minute: Limit = Field(
        30, validation_alias=_env("PARLEY_TURNS_PER_IP_PER_MINUTE")
    )
    org_daily_tokens: Limit = Field(20_000_000, validation_alias=_env("PARLEY_ORG_DAILY_TOKENS"))
    org_daily_usd: UsdLimit = Field(100.0, validation_alias=_env("PARLEY_ORG_DAILY_USD"))
    agent_daily_tokens: Limit = Field(
        10_000_000, validation_alias=_env("PARLEY_AGENT_DAILY_TOKENS")
    )
    agent_daily_usd: UsdLimit = Field(50.0, validation_alias=_env("PARLEY_AGENT_DAILY_USD"))
    # What one send_message may carry (parley/attachments.py); over it: VALIDATION_ERROR.
    max_images: Limit = Field(4, validation_alias=_env("PARLEY_MAX_IMAGES"))
    max_image_bytes: Limit = Field(5 * 1024 * 1024, validation_alias=_env("PARLEY_MAX_IMAGE_BYTES"))
    max_files: Limit = Field(10, validation_alias=_env("PARLEY_MAX_FILES"))

    # The worker's /metrics listener (Prometheus); unset: none. Traces are configured by the
    # standard OTEL_* variables (parley/tracing.py), not here.
    worker_metrics_port: int | None = Field(
        None, ge=0, le=65535, validation_alias=_env("PARLEY_WORKER_METRICS_PORT")
    )
    worker_metrics_host: str = Field(
        "127.0.0.1", validation_alias=_env("PARLEY_WORKER_METRICS_HOST")
    )

    # Approval webhooks may reach loopback and private addresses (a private deployment).
    webhook_allow_private: bool = Field(
        False, validation_alias=_env("PARLEY_WEBHOOK_ALLOW_PRIVATE")
    )
    log_level: str = Field("INFO", validation_alias=_env("PARLEY_LOG_LEVEL"))
    log_format: str = Field("console", validation_alias=_env("PARLEY_LOG_FORMAT"))
    # Message text, model requests and replies, tool arguments: logged only when this is on.
    log_payloads: bool = Field(False, validation_alias=_env("PARLEY_LOG_PAYLOADS"))

    @model_validator(mode="after")
    def _jwt_has_a_key(self) -> Settings:
        if self.auth == "jwt" and not (self.jwt_secret or self.jwt_public_key or self.jwt_jwks_url):
            raise ValueError(
                "PARLEY_AUTH=jwt needs PARLEY_JWT_SECRET, PARLEY_JWT_PUBLIC_KEY"
                " or PARLEY_JWT_JWKS_URL"
            )
        return self

    @property
    def has_model_key(self) -> bool:
        """True when a non-blank Anthropic key is configured (turns are possible)."""
        key = self.anthropic_api_key
        return key is not None and bool(key.get_secret_value().strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
