"""Unit: what only the Redis state store has, against real redis-servers: two hosts crediting
one request at once, requests that Redis expires with the feedback window, writes that are
safe to retry, and an outage: answered requests kept (bounded) and written when Redis is back,
reads and feedback refused naming the store, the outage logged once; the bandit choosing with
its last totals meanwhile; and the setting that selects the store."""

import logging
import signal
import sys
import threading
import time

import pytest
from pydantic import ValidationError

from api.serving import Bandit as Options
from api.serving import parse
from api.settings import Settings, describe
from api.state import AlreadyRewarded, SqliteState, StoreUnavailable, UnknownRequest
from api.state_redis import RedisState, public_url
from api.strategies import build
from api.strategies.bandit import Bandit
from tests.redis_server import RedisServer
from tests.servers import free_port

DAY_S = 86400.0


def test_two_hosts_that_both_read_a_request_before_either_credits_it_count_it_once(redis_url):
    """The credit itself checks and marks the request in one step: both hosts find it
    uncredited, one credit counts, the other is refused."""
    host_a, host_b = RedisState(redis_url, DAY_S), RedisState(redis_url, DAY_S)
    host_a.record([("r1", "a", ["Adelie"], time.time())])
    both_read = threading.Barrier(2)
    for host in (host_a, host_b):
        read = host._redis.hmget

        def read_then_wait(*args, read=read, **kwargs):
            fields = read(*args, **kwargs)
            both_read.wait(10)
            return fields

        host._redis.hmget = read_then_wait
    outcomes: list[object] = []

    def credit(host):
        try:
            outcomes.append(host.reward("r1", 1.0, None, 60))
        except AlreadyRewarded as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=credit, args=(host,)) for host in (host_a, host_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(map(type, outcomes), key=str) == sorted([tuple, AlreadyRewarded], key=str)
    assert ("a", 1.0) in outcomes
    assert host_b.totals() == {"a": (1, 1.0, 1)}


def test_requests_expire_with_the_feedback_window(redis_url, redis_session):
    state = RedisState(redis_url, ttl_s=60)
    now = time.time()
    state.record([("fresh", "a", ["x"], now), ("stale", "a", ["x"], now - 61)])
    with redis_session.client() as client:
        assert 55_000 < client.pttl("lockserve:request:fresh") <= 60_000
        assert not client.exists("lockserve:request:stale")  # its window had closed
    with pytest.raises(UnknownRequest):
        state.reward("stale", 1.0, None, 3600)
    assert state.totals() == {"a": (2, 0.0, 0)}  # both were answered: two pulls
    assert state.reward("fresh", 1.0, None, 60) == ("a", 1.0)


def test_a_write_sent_again_counts_once(redis_url):
    """The same answer written twice (a write retried after its reply was lost) is one pull;
    the same request id answered again later is another (as in SQLite)."""
    state = RedisState(redis_url, DAY_S)
    now = time.time()
    rows = [("r1", "a", ["x"], now), ("r2", "b", ["y"], now)]
    state.record(rows)
    state.record(rows)
    assert state.totals() == {"a": (1, 0.0, 0), "b": (1, 0.0, 0)}
    state.record([("r1", "a", ["x"], now + 1)])
    assert state.totals()["a"] == (2, 0.0, 0)


def test_the_url_in_messages_has_no_credentials():
    assert public_url("redis://:s3cret@cache.internal:6380/2?socket_timeout=1") == (
        "redis://cache.internal:6380/2"
    )
    assert public_url("rediss://user:pw@h/0") == "rediss://h/0"
    assert public_url("unix:///run/redis.sock?db=1") == "unix:///run/redis.sock"


@pytest.fixture()
def redis_server(tmp_path):
    """A redis-server of this test's own, which the test may stop and start again."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def lines(caplog, level):
    return [
        r.getMessage() for r in caplog.records if r.name == "lockserve.state" and r.levelno == level
    ]


def test_an_outage_keeps_answered_requests_and_writes_them_when_redis_is_back(redis_server, caplog):
    caplog.set_level(logging.INFO, "lockserve.state")
    state = RedisState(redis_server.url, DAY_S, retry_s=0)
    now = time.time()
    state.record([("before", "a", ["Adelie"], now)])
    state.reward("before", 1.0, None, 60)
    redis_server.stop(signal.SIGKILL)

    state.record([("during-1", "a", ["Adelie"], now), ("during-2", "b", ["Gentoo"], now)])
    state.record([("during-3", "b", ["Gentoo"], now)])
    assert state.pending == 3
    for _ in range(3):
        with pytest.raises(StoreUnavailable) as refused:
            state.reward("during-1", 1.0, None, 60)
        with pytest.raises(StoreUnavailable):
            state.totals()
    assert str(refused.value) == (
        f"state store {redis_server.url} is unreachable: feedback cannot be counted now; "
        "send it again later"
    )
    down = lines(caplog, logging.WARNING)
    assert len(down) == 1  # once for the outage, not per call
    assert down[0].startswith(f"state store {redis_server.url} unreachable (")
    assert "Connection refused" in down[0]

    redis_server.start()  # same port, same data directory
    state.record([])
    assert state.pending == 0
    assert state.totals() == {"a": (2, 1.0, 1), "b": (2, 0.0, 0)}
    assert state.reward("during-2", None, ["Gentoo"], 60) == ("b", 1.0)
    with pytest.raises(AlreadyRewarded):
        state.reward("before", 1.0, None, 60)  # kept by Redis across its restart
    (back,) = lines(caplog, logging.INFO)
    assert back.startswith(f"state store {redis_server.url} reachable again after ")
    assert back.endswith(" s: writing 3 answered requests kept meanwhile")

    redis_server.stop()  # a second outage is logged again
    with pytest.raises(StoreUnavailable):
        state.totals()
    assert len(lines(caplog, logging.WARNING)) == 2


def test_the_outage_buffer_is_bounded_and_keeps_the_newest(redis_server, caplog):
    caplog.set_level(logging.INFO, "lockserve.state")
    state = RedisState(redis_server.url, DAY_S, max_pending=3, retry_s=0)
    redis_server.stop()
    now = time.time()
    for i in range(5):
        state.record([(f"r{i}", "a", ["x"], now)])
    assert state.pending == 3
    redis_server.start()
    state.record([])
    assert state.totals() == {"a": (3, 0.0, 0)}
    with pytest.raises(UnknownRequest):
        state.reward("r1", 1.0, None, 60)  # dropped
    assert state.reward("r2", 1.0, None, 60) == ("a", 1.0)
    assert lines(caplog, logging.WARNING)[1:] == [
        f"state store {redis_server.url}: 3 answered requests kept, dropping the oldest"
    ]
    assert lines(caplog, logging.INFO)[0].endswith(
        "writing 3 answered requests kept meanwhile "
        "(2 older ones were dropped: the buffer was full)"
    )


def test_while_redis_is_down_the_bandit_chooses_with_its_last_totals(redis_server):
    state = RedisState(redis_server.url, DAY_S, retry_s=0)
    now = time.time()
    state.record([(f"{v}{i}", v, ["x"], now) for v in "ab" for i in range(10)])
    for i in range(10):
        state.reward(f"a{i}", 0.0, None, 60)
        state.reward(f"b{i}", 1.0, None, 60)
    bandit = Bandit(["a", "b"], state, Options(algorithm="epsilon_greedy", epsilon=0.0), DAY_S)
    redis_server.stop()
    bandit.observe("r1", "a", ["x"])
    bandit.flush()  # no error: the row is kept, the totals are the last ones read
    assert bandit.describe("b") == {"role": "arm", "pulls": 10, "feedbacks": 10, "mean_reward": 1.0}
    assert [bandit.choose(None) for _ in range(5)] == ["b"] * 5
    with pytest.raises(StoreUnavailable):
        bandit.feedback("a0", 1.0, None)
    redis_server.start()
    bandit.flush()
    assert bandit.describe("a")["pulls"] == 11
    assert bandit.feedback("r1", 1.0, None) == ("a", 1.0)


def test_a_bandit_starts_while_redis_is_unreachable():
    state = RedisState(f"redis://127.0.0.1:{free_port()}/0", DAY_S)
    bandit = Bandit(["a", "b"], state, Options(seed=0), DAY_S)
    assert bandit.describe("a") == {"role": "arm", "pulls": 0, "feedbacks": 0, "mean_reward": None}
    assert bandit.choose(None) in {"a", "b"}
    bandit.observe("r1", "a", ["x"])
    bandit.flush()
    assert state.pending == 1


BANDIT = "strategy: bandit\nvariants:\n  a: {rev: v1}\n  b: {rev: v2}\n"


def test_the_url_setting_selects_redis_and_sqlite_stays_the_default(redis_url, tmp_path):
    config = parse(BANDIT)
    on_redis = build(config, tmp_path / "s.sqlite", 120.0, redis_url)
    assert isinstance(on_redis._state, RedisState) and on_redis._state._ttl_s == 120.0
    assert isinstance(build(config, tmp_path / "s.sqlite", 120.0)._state, SqliteState)
    assert Settings().state_url is None
    assert Settings(state_url=redis_url).state_url.get_secret_value() == redis_url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:pw@cache:6379/0", "not a Redis URL: redis://host:port/db, rediss://"),
        ("redis://:pw@cache:port/0", "not a Redis URL: Port could not be cast to integer"),
    ],
)
def test_a_bad_url_is_refused_in_one_line_without_its_password(url, message):
    with pytest.raises(ValidationError) as refused:
        Settings(state_url=url)
    line = describe(refused.value)
    assert line.startswith("LOCKSERVE_STATE_URL='**********': Value error, " + message)
    assert "pw" not in line and "\n" not in line


def test_the_url_is_refused_where_the_redis_client_is_not_installed(monkeypatch):
    """As in the packaged artifacts, whose runtime lock has no redis."""
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis raises ImportError
    with pytest.raises(ValidationError) as refused:
        Settings(state_url="redis://cache:6379/0")
    assert describe(refused.value) == (
        "LOCKSERVE_STATE_URL='**********': Value error, the redis package is not installed here"
    )
