"""Integration: two apps (two hosts) whose bandits share one real redis-server, through the
test client: feedback to either host for a request the other answered, the 503 that names an
unreachable store, and feedback for requests answered during the outage once Redis is back."""

import contextlib
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.serving import parse
from api.settings import Settings
from api.store import ModelStore
from api.strategies import build
from tests.conftest import PENGUIN, served_model
from tests.redis_server import running_redis

CONFIG = """\
strategy: bandit
variants:
  a: {rev: v1}
  b: {rev: v2}
bandit: {algorithm: thompson, seed: 1, flush_ms: 20}
"""


@pytest.fixture()
def hosts(artifacts, tmp_path):
    """Redis, and two apps on it: each its own models, bandit and SQLite path (unused)."""
    with running_redis(tmp_path / "redis") as redis, contextlib.ExitStack() as stack:
        clients = []
        for host in ("a", "b"):
            store = ModelStore(
                {
                    name: served_model(name, artifacts[tag], tag)
                    for name, tag in (("a", "v1"), ("b", "v2"))
                }
            )
            strategy = build(parse(CONFIG), tmp_path / f"{host}.sqlite", 86400.0, redis.url)
            app = create_app(Settings(), store, strategy)
            clients.append(stack.enter_context(TestClient(app)))
        yield redis, clients


def ask(client):
    r = client.post("/predict", json={"instances": [PENGUIN]})
    assert r.status_code == 200
    return r.headers["x-request-id"]


def arms(client):
    return {
        v["variant"]: (v["pulls"], v["feedbacks"]) for v in client.get("/model").json()["variants"]
    }


def until(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def test_two_hosts_share_the_bandit_through_redis(hosts):
    redis, (host_a, host_b) = hosts
    answered_by_a = [ask(host_a) for _ in range(4)]
    for request_id in answered_by_a:
        r = host_b.post("/feedback", json={"request_id": request_id, "label": "Gentoo"})
        assert r.status_code == 200, r.text
    again = host_a.post("/feedback", json={"request_id": answered_by_a[0], "reward": 1})
    assert again.status_code == 409
    assert until(lambda: sum(f for _, f in arms(host_a).values()) == 4)
    assert arms(host_a) == arms(host_b)

    redis.stop()
    during = [ask(host_a) for _ in range(3)]  # predictions go on
    refused = host_b.post("/feedback", json={"request_id": answered_by_a[1], "reward": 1})
    assert refused.status_code == 503
    assert refused.json()["error"]["message"] == (
        f"state store {redis.url} is unreachable: feedback cannot be counted now; "
        "send it again later"
    )
    redis.start()
    assert until(lambda: sum(p for p, _ in arms(host_b).values()) == 7)
    for request_id in during:
        r = host_b.post("/feedback", json={"request_id": request_id, "reward": 0.5})
        assert r.status_code == 200, r.text
    assert until(
        lambda: arms(host_a) == arms(host_b) and sum(f for _, f in arms(host_a).values()) == 7
    )
