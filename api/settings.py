"""Service settings, read from the environment (LOCKSERVE_*) by pydantic-settings."""

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service can be told; defaults serve HEAD of the repo in the cwd."""

    model_config = SettingsConfigDict(env_prefix="LOCKSERVE_")

    repo: Path = Field(Path("."), description="DVC/git repository holding dvc.yaml and dvc.lock")
    rev: str | None = Field(
        None,
        description="git revision (or GTO name@version / name#stage) for a single variant; "
        "overrides serving.yaml's rev when its strategy is single",
    )
    state_db: Path = Field(
        Path(".lockserve/state.sqlite"), description="bandit state shared by the workers"
    )
    state_url: SecretStr | None = Field(
        None,
        description="bandit state shared by many hosts: a Redis URL (redis://host:6379/0, "
        "rediss://, unix://); unset: the SQLite file LOCKSERVE_STATE_DB",
    )
    feedback_token: SecretStr | None = Field(
        None,
        description="bearer token(s), comma-separated, that POST /feedback requires; none: open",
    )
    metrics_token: SecretStr | None = Field(
        None, description="bearer token(s), comma-separated, that GET /metrics requires; none: open"
    )
    feedback_ttl_s: float = Field(86400.0, gt=0, description="how long a request takes feedback")
    serving_file: Path = Field(
        Path("serving.yaml"), description="variants and deployment strategy (serving.yaml)"
    )
    artifact: str | None = Field(
        None,
        description="artifact name in dvc.yaml; by default the one artifact of type model",
    )
    remote: str | None = Field(None, description="DVC remote to fetch from (default remote)")
    bundle: Path | None = Field(
        None,
        description="a packaged model bundle (folder with bundle.json) to serve instead of "
        "resolving a rev: no repository, no DVC; one variant",
    )
    bundle_md5: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="the md5 the bundle must hold (an image's dev.lockserve.model.md5 label)",
    )
    fetch_attempts: int = Field(3, ge=1, le=10, description="tries to reach the remote")
    fetch_backoff_s: float = Field(0.5, ge=0, description="first retry delay, doubled each time")
    max_batch: int = Field(1000, ge=1, description="most instances in one /predict request")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body accepted")
    log_level: str = Field("INFO", description="level of the JSON logs on stderr")
    backend: Literal["onnx", "sklearn"] = Field(
        "onnx", description="onnx whenever the artifact has a graph (else sklearn), or sklearn"
    )
    runner: Literal["inline", "thread", "batch"] | None = Field(
        None,
        description="how a variant runs: on the event loop, in a thread pool, or in adaptive "
        "batches; default batch for sklearn, inline for onnx",
    )
    threads: int = Field(4, ge=1, le=64, description="thread pool size of the thread runner")
    max_batch_size: int = Field(256, ge=1, description="most rows in one adaptive batch")
    max_latency_ms: float = Field(2.0, ge=0, description="longest a row waits for batch-mates")
    fast_path: bool = Field(True, description="answer /predict with the thin ASGI handler")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="Open Inference Protocol over gRPC; 0 turns it off"
    )
    grpc_host: str = Field(
        default_factory=lambda: os.environ.get("HOST", "127.0.0.1"),
        description="interface the gRPC server binds (the HTTP server's HOST by default)",
    )
    grpc_grace_s: float = Field(
        5.0, ge=0, description="on shutdown, how long calls in progress may finish"
    )

    @field_validator("state_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A URL the Redis client reads, on a host that has the client."""
        if value is None:
            return value
        url = value.get_secret_value()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("not a Redis URL: redis://host:port/db, rediss://... or unix:///path")
        try:
            import redis
        except ImportError:
            raise ValueError("the redis package is not installed here") from None
        try:
            redis.ConnectionPool.from_url(url)
        except ValueError as exc:
            raise ValueError(f"not a Redis URL: {exc}") from None
        return value


def describe(exc: ValidationError) -> str:
    """Settings that failed validation, in one line naming each environment variable."""
    parts = []
    for error in exc.errors():
        name = "LOCKSERVE_" + "_".join(str(part) for part in error["loc"]).upper()
        field = Settings.model_fields.get(str(error["loc"][0])) if error["loc"] else None
        secret = field is not None and "SecretStr" in str(field.annotation)
        shown = "'**********'" if secret else repr(error.get("input"))
        parts.append(f"{name}={shown}: {error['msg']}")
    return "; ".join(parts)
