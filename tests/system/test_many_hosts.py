"""System: two real gunicorn servers (two hosts) on one repo and one real redis-server: the
bandit's state shared by both, feedback to either host, Redis killed and restarted while both
serve, and canary stickiness identical on both hosts."""

import contextlib
import json
import signal
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import PENGUIN, ROOT
from tests.redis_server import RedisServer, running_redis
from tests.servers import SERVER, Server, free_port, http, json_lines

pytestmark = pytest.mark.system

BANDIT = (
    "strategy: bandit\nvariants:\n  a: {rev: v1}\n  b: {rev: v2}\n"
    "bandit: {algorithm: epsilon_greedy, epsilon: 0.2, seed: 0}\n"
)
CANARY = (
    "strategy: canary\nvariants:\n  stable: {rev: v1, weight: 50}\n"
    "  candidate: {rev: v2, weight: 50}\n"
)


@contextlib.contextmanager
def two_hosts(model_repo, tmp_path, text: str, redis: RedisServer) -> Iterator[list[Server]]:
    """Two servers of one worker each on free ports, both on ``redis``; always stopped."""
    serving = tmp_path / "serving.yaml"
    serving.write_text(text)
    servers = []
    try:
        for name in ("host-a", "host-b"):
            servers.append(
                Server(
                    SERVER,
                    ROOT,
                    free_port(),
                    tmp_path / f"{name}.log",
                    LOCKSERVE_REPO=str(model_repo),
                    LOCKSERVE_SERVING_FILE=str(serving),
                    LOCKSERVE_STATE_URL=redis.url,
                    WEB_CONCURRENCY="1",
                )
            )
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def predict(server: Server, key: str | None = None) -> tuple[str, str]:
    """(request id, variant) of one prediction."""
    headers = {"content-type": "application/json"}
    if key:
        headers["x-routing-key"] = key
    req = urllib.request.Request(
        server.base + "/predict",
        data=json.dumps({"instances": [PENGUIN]}).encode(),
        headers=headers,
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return resp.headers["x-request-id"], json.loads(resp.read())["model"]["variant"]


def feedback(server: Server, request_id: str) -> tuple[int, dict]:
    return http("POST", server.base + "/feedback", {"request_id": request_id, "label": "Gentoo"})


def arms(server: Server) -> dict[str, tuple[int, int]]:
    """variant -> (pulls, feedbacks), as this host's bandit sees them."""
    described = http("GET", server.base + "/model")[1]
    return {v["variant"]: (v["pulls"], v["feedbacks"]) for v in described["variants"]}


def counted(server: Server) -> tuple[int, int]:
    seen = arms(server).values()
    return sum(p for p, _ in seen), sum(f for _, f in seen)


def until(check, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def state_lines(server: Server, level: str) -> list[str]:
    return [
        line["msg"]
        for line in json_lines(server.output())
        if line.get("logger") == "lockserve.state" and line["level"] == level
    ]


def test_two_hosts_share_the_bandit_and_ride_out_a_redis_outage(model_repo, tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with two_hosts(model_repo, tmp_path, BANDIT, redis) as (host_a, host_b):
            by_a = [predict(host_a)[0] for _ in range(10)]
            by_b = [predict(host_b)[0] for _ in range(10)]
            for request_id in by_a:  # each host credits the other's requests
                assert feedback(host_b, request_id)[0] == 200
            for request_id in by_b[:5]:
                assert feedback(host_a, request_id)[0] == 200
            status, body = feedback(host_a, by_a[0])
            assert status == 409 and body["error"]["code"] == "conflict"
            assert until(lambda: counted(host_a) == counted(host_b) == (20, 15))
            assert arms(host_a) == arms(host_b)  # one bandit, seen from both hosts

            redis.stop(signal.SIGKILL)
            during: list[str] = []
            outage_ends = time.monotonic() + 2.0  # several of the store's retries (0.5 s)
            while time.monotonic() < outage_ends or len(during) < 20:
                during += [predict(host_a)[0], predict(host_b)[0]]
                for host, request_id in ((host_b, during[-2]), (host_a, by_b[5])):
                    status, body = feedback(host, request_id)
                    assert status == 503
                    assert body["error"]["message"] == (
                        f"state store {redis.url} is unreachable: feedback cannot be counted "
                        "now; send it again later"
                    )
                time.sleep(0.05)
            assert counted(host_a) == counted(host_b) == (20, 15)  # the last known totals

            redis.start()  # same port, same data directory (AOF)
            pulls = 20 + len(during)
            assert until(lambda: counted(host_a) == counted(host_b) == (pulls, 15))
            for request_id in during[0::2]:  # answered during the outage, by either host
                assert feedback(host_b, request_id)[0] == 200
            for request_id in during[1::2] + by_b[5:]:
                assert feedback(host_a, request_id)[0] == 200
            done = (pulls, 20 + len(during))
            assert until(lambda: counted(host_a) == counted(host_b) == done)
            assert arms(host_a) == arms(host_b)
        for host in (host_a, host_b):
            down = state_lines(host, "WARNING")
            assert len(down) == 1, down  # once for the outage, not per request
            assert down[0].startswith(f"state store {redis.url} unreachable (")
            back = state_lines(host, "INFO")
            assert len(back) == 1 and "reachable again" in back[0], back
            assert "Traceback" not in host.output()
    finally:
        redis.stop()


def test_canary_sends_a_routing_key_to_the_same_variant_on_both_hosts(model_repo, tmp_path):
    with (
        running_redis(tmp_path / "redis") as redis,
        two_hosts(model_repo, tmp_path, CANARY, redis) as (host_a, host_b),
    ):
        on_a = {f"user-{i}": predict(host_a, f"user-{i}")[1] for i in range(40)}
        on_b = {f"user-{i}": predict(host_b, f"user-{i}")[1] for i in range(40)}
        again_b = {key: predict(host_b, key)[1] for key in reversed(on_a)}
    assert on_a == on_b == again_b
    assert set(on_a.values()) == {"stable", "candidate"}
