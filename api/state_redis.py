"""The bandit's state in Redis, shared by many hosts (``LOCKSERVE_STATE_URL=redis://...``).

Owns the Redis side of :class:`~api.state.StateStore`. Each answered request is a hash
(variant, answered labels, time answered, rewarded) that Redis expires when its feedback
window closes; per-variant pulls, reward sums and feedback counts are three hashes keyed by
variant. Every write is one Lua script, so two hosts crediting the same request count it once,
and a write retried after its reply was lost counts nothing twice; totals are read in one
MULTI/EXEC. When Redis cannot be used, answered requests wait in a bounded buffer in memory and
are written, oldest first, as soon as it answers again; reads and feedback raise
StoreUnavailable (tried again at most every ``retry_s``), and the outage is logged once when it
starts and once when it ends.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.state import AlreadyRewarded, StoreUnavailable, UnknownRequest, reward_of

log = logging.getLogger("lockserve.state")

T = TypeVar("T")
Row = tuple[str, str, list[str], float]

PREFIX = "lockserve:"  # one deployment per Redis database (the /db in the URL)
CHUNK = 500  # rows per script call: a long outage's buffer is written in many short calls

# KEYS[1]: the pulls hash; KEYS[2..]: one request hash per row.
# ARGV, four per row: variant, answered labels (JSON), time answered, expiry (unix ms).
# A request id seen before keeps its first answer (as SQLite's INSERT OR IGNORE) and counts
# one more pull; the same answer written twice (a retry) counts nothing.
RECORD = """
for i = 2, #KEYS do
  local at = (i - 2) * 4
  local variant, created = ARGV[at + 1], ARGV[at + 3]
  if redis.call('HSETNX', KEYS[i], 'answer:' .. created, 1) == 1 then
    redis.call('HINCRBY', KEYS[1], variant, 1)
    if redis.call('HSETNX', KEYS[i], 'variant', variant) == 1 then
      redis.call('HSET', KEYS[i], 'labels', ARGV[at + 2], 'created', created)
      redis.call('PEXPIREAT', KEYS[i], ARGV[at + 4])
    end
  end
end
return #KEYS - 1
"""

# KEYS: the request hash, the reward hash, the feedbacks hash; ARGV[1]: the reward.
CREDIT = """
local variant = redis.call('HGET', KEYS[1], 'variant')
if not variant then
  return {'unknown'}
end
if redis.call('HSETNX', KEYS[1], 'rewarded', 1) == 0 then
  return {'rewarded'}
end
redis.call('HINCRBYFLOAT', KEYS[2], variant, ARGV[1])
redis.call('HINCRBY', KEYS[3], variant, 1)
return {'credited', variant}
"""


def public_url(url: str) -> str:
    """The URL without credentials or options: what logs and error messages may show."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


class RedisState:
    """The StateStore in Redis; requests expire ``ttl_s`` after they were answered."""

    def __init__(
        self,
        url: str,
        ttl_s: float,
        max_pending: int = 100_000,
        retry_s: float = 0.5,
    ) -> None:
        # options in the URL (?socket_timeout=...) win over these defaults; one immediate
        # retry replaces a pooled connection that a Redis restart closed
        self._redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 1),
        )
        self.where = public_url(url)
        self._ttl_s = ttl_s
        self._pulls, self._rewards, self._feedbacks = (
            f"{PREFIX}arm:{name}" for name in ("pulls", "reward", "feedbacks")
        )
        self._record_script = self._redis.register_script(RECORD)
        self._credit_script = self._redis.register_script(CREDIT)
        self._max_pending = max_pending
        self._retry_s = retry_s
        self._pending: deque[Row] = deque()
        self._writing = threading.Lock()  # the buffer: the flush and feedback threads share it
        self._outage = threading.Lock()  # the outage's start and end, each logged once
        self._down_since: float | None = None
        self._last_try = 0.0
        self._dropped = 0

    def _key(self, request_id: str) -> str:
        return f"{PREFIX}request:{request_id}"

    @property
    def pending(self) -> int:
        """Answered requests kept in memory, not written yet."""
        return len(self._pending)

    # -- reachability
    def _unreachable(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"state store {self.where} is unreachable: feedback cannot be counted now; "
            "send it again later"
        )

    def _call(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` against Redis, or raise StoreUnavailable (at once while a recent
        try failed)."""
        if self._down_since is not None and time.monotonic() - self._last_try < self._retry_s:
            raise self._unreachable()
        self._last_try = time.monotonic()
        try:
            result = operation()
        except redis.RedisError as exc:
            self._went_down(exc)
            raise self._unreachable() from None
        if self._down_since is not None:
            self._came_back()
        return result

    def _went_down(self, exc: Exception) -> None:
        with self._outage:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        reason = " ".join(str(exc).split()) or type(exc).__name__
        log.warning(
            "state store %s unreachable (%s): predictions go on with the last known totals, "
            "answered requests are kept in memory (at most %d) until it is back, feedback is "
            "refused until then",
            self.where,
            reason,
            self._max_pending,
        )

    def _came_back(self) -> None:
        with self._outage:
            if self._down_since is None:
                return
            lasted = time.monotonic() - self._down_since
            self._down_since = None
            dropped, self._dropped = self._dropped, 0
        log.info(
            "state store %s reachable again after %.1f s: writing %d answered requests kept "
            "meanwhile%s",
            self.where,
            lasted,
            len(self._pending),
            f" ({dropped} older ones were dropped: the buffer was full)" if dropped else "",
        )

    # -- the StateStore
    def record(self, rows: list[Row]) -> None:
        with self._writing:
            for row in rows:
                if len(self._pending) >= self._max_pending:
                    self._pending.popleft()
                    if self._dropped == 0:
                        log.warning(
                            "state store %s: %d answered requests kept, dropping the oldest",
                            self.where,
                            self._max_pending,
                        )
                    self._dropped += 1
                self._pending.append(row)
            while self._pending:
                chunk = list(itertools.islice(self._pending, CHUNK))
                try:
                    self._call(lambda chunk=chunk: self._write(chunk))
                except StoreUnavailable:
                    return  # kept; the next record() tries again
                for _ in chunk:
                    self._pending.popleft()

    def _write(self, rows: list[Row]) -> None:
        keys, args = [self._pulls], []
        for request_id, variant, labels, created in rows:
            keys.append(self._key(request_id))
            expires_ms = int((created + self._ttl_s) * 1000)
            args += [variant, json.dumps(labels), repr(float(created)), expires_ms]
        self._record_script(keys=keys, args=args)

    def reward(
        self, request_id: str, reward: float | None, labels: list[str] | None, max_age_s: float
    ) -> tuple[str, float]:
        key = self._key(request_id)
        fields = ["variant", "labels", "created", "rewarded"]
        variant, answered, created, rewarded = self._call(lambda: self._redis.hmget(key, fields))
        if variant is None or float(created) < time.time() - max_age_s:
            raise UnknownRequest(request_id)
        if rewarded is not None:
            raise AlreadyRewarded(request_id)
        reward = reward_of(request_id, reward, answered, labels)
        keys = [key, self._rewards, self._feedbacks]
        outcome = self._call(lambda: self._credit_script(keys=keys, args=[repr(float(reward))]))
        if outcome[0] == "unknown":  # expired between the read and the credit
            raise UnknownRequest(request_id)
        if outcome[0] == "rewarded":  # another worker or host credited it in between
            raise AlreadyRewarded(request_id)
        return outcome[1], reward

    def totals(self) -> dict[str, tuple[int, float, int]]:
        def read() -> list[dict[str, str]]:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._pulls)
                pipe.hgetall(self._rewards)
                pipe.hgetall(self._feedbacks)
                return pipe.execute()

        pulls, rewards, feedbacks = self._call(read)
        return {
            variant: (
                int(pulls.get(variant, 0)),
                float(rewards.get(variant, 0.0)),
                int(feedbacks.get(variant, 0)),
            )
            for variant in pulls.keys() | rewards.keys()
        }
