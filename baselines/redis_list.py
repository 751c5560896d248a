"""``redis-list``: Redis's reliable-queue pattern (BLMOVE into a per-worker processing list).

Keys, all under ``lq:<queue>:``: ``ready`` (list of job ids; LPUSH in, taken from the
right), ``proc:<consumer>`` (a consumer's processing list), ``jobs`` (hash id -> payload),
``attempts`` (hash id -> deliveries), ``leases`` (hash id -> deadline, Redis server time
in ms), ``hb:<consumer>`` (liveness key with a TTL), ``workers`` (set of consumers),
``dead`` (list of dead-lettered ids).

A delivery is ``BLMOVE ready -> proc:<me>`` plus a Lua step that counts the attempt and
sets the lease. Ack is ``LREM`` from the processing list (in Lua, with the bookkeeping);
it fails when the job is no longer in *this* consumer's list, i.e. it was reaped. Every
consumer runs a background thread that refreshes its heartbeat key and runs the reaper:
one Lua script that returns to ``ready`` all jobs of consumers whose heartbeat key
expired, and every job whose lease passed; a job that already had ``max_attempts``
deliveries goes to ``dead`` instead.

| knob | mapping |
| --- | --- |
| ``heartbeat_s`` | TTL of the consumer's heartbeat key (refreshed every ``heartbeat_s``/3); a dead consumer's jobs return after at most ``heartbeat_s`` plus one reaper pass |
| ``timeout_s`` | the job lease: a job whose lease (extended by ``Delivery.heartbeat``) passes is returned by the reaper |
| ``prefetch`` | not applicable: BLMOVE takes one job at a time |
| ``max_attempts`` | exact: the ``attempts`` hash counts deliveries; dead-lettered when a job with that many is returned or nacked |

What Redis cannot do: the enqueue is confirmed by Redis's reply, which is durable only as
far as the server's persistence setting (``appendonly``/``appendfsync``) makes it; there
is no broker-side redelivery: the reaper is client code, so with no consumer running,
nothing is reaped.
"""
from __future__ import annotations

import threading
import time
import uuid

import redis

from baselines import _redis
from baselines.base import AckError, Backend, Consumer, Delivery, new_job_id
from baselines.servers import REDIS

# KEYS: proc, attempts, leases, jobs. ARGV: id, timeout_ms. -> {attempt, payload} or false
_CLAIM = """
local payload = redis.call('HGET', KEYS[4], ARGV[1])
if not payload then
  redis.call('LREM', KEYS[1], 0, ARGV[1])
  return false
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local attempt = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[3], ARGV[1], now + tonumber(ARGV[2]))
return {attempt, payload}
"""

# The attempt number fences deliveries: a job redelivered to the same consumer must not
# be settled by the older delivery. KEYS[2] is always the attempts hash.

# KEYS: proc, attempts, leases, jobs. ARGV: id, attempt. -> 1 acked, 0 not held
_ACK = """
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1') ~= tonumber(ARGV[2]) then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""

# KEYS: proc, attempts, leases, jobs, ready, dead. ARGV: id, requeue (1/0), max_attempts, attempt.
# -> 0 not held, 1 requeued, 2 dead-lettered
_NACK = """
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1') ~= tonumber(ARGV[4]) then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
local attempts = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if ARGV[2] == '1' and attempts < tonumber(ARGV[3]) then
  redis.call('LPUSH', KEYS[5], ARGV[1])
  return 1
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('RPUSH', KEYS[6], ARGV[1])
return 2
"""

# KEYS: proc, attempts, leases. ARGV: id, timeout_ms, attempt. -> 1 extended, 0 not held
_EXTEND = """
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1') ~= tonumber(ARGV[3]) then return 0 end
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[3], ARGV[1], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2]))
return 1
"""

# KEYS: workers, attempts, leases, jobs, ready, dead. ARGV: prefix, max_attempts.
# Returns jobs of dead consumers and jobs past their lease; -> number returned or dead-lettered.
_REAP = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local max = tonumber(ARGV[2])
local moved = 0
local function give_back(id)
  redis.call('HDEL', KEYS[3], id)
  local attempts = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  if attempts >= max then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('RPUSH', KEYS[6], id)
  else
    redis.call('RPUSH', KEYS[5], id)
  end
  moved = moved + 1
end
for _, worker in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local proc = ARGV[1] .. 'proc:' .. worker
  local alive = redis.call('EXISTS', ARGV[1] .. 'hb:' .. worker) == 1
  for _, id in ipairs(redis.call('LRANGE', proc, 0, -1)) do
    local deadline = tonumber(redis.call('HGET', KEYS[3], id) or '-1')
    -- a job with no lease yet is between BLMOVE and its claim step: only a dead worker loses it
    if not alive or (deadline >= 0 and deadline <= now) then
      redis.call('LREM', proc, 1, id)
      give_back(id)
    end
  end
  if not alive then redis.call('SREM', KEYS[1], worker) end
end
return moved
"""


class RedisListBackend(Backend):
    name = "redis-list"
    servers = (REDIS,)
    durability = "LPUSH reply; on disk only as far as the server's appendonly/appendfsync settings"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.prefix = f"lq:{config.queue}:"
        self._r: redis.Redis | None = None

    def key(self, name: str) -> str:
        return self.prefix + name

    def connect(self) -> None:
        self._r = _redis.client(self.config)
        _redis.ping(self.name, self.config, self._r)
        self.scripts = {name: self._r.register_script(src) for name, src in
                        (("claim", _CLAIM), ("ack", _ACK), ("nack", _NACK), ("extend", _EXTEND), ("reap", _REAP))}

    def _push(self, jobs: list[tuple[str, bytes]], window: int) -> None:
        # ``window`` jobs per round trip, each written atomically (MULTI: payload, then id)
        for start in range(0, len(jobs), window):
            pipe = self._r.pipeline(transaction=True)
            for job_id, payload in jobs[start:start + window]:
                pipe.hset(self.key("jobs"), job_id, payload)
                pipe.lpush(self.key("ready"), job_id)
            pipe.execute()

    def enqueue(self, payload: bytes, job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        self._push([(job_id, payload)], window=1)
        return job_id

    def _enqueue_batch(self, jobs: list[tuple[str, bytes]], window: int) -> None:
        """Pipelined: ``window`` jobs per round trip."""
        self._push(jobs, window)

    def consumer(self, worker_id: str) -> "RedisListConsumer":
        return RedisListConsumer(self, f"{worker_id}:{uuid.uuid4().hex[:8]}")

    def reap(self) -> int:
        """Return the jobs of dead consumers and of expired leases; how many moved."""
        keys = [self.key(k) for k in ("workers", "attempts", "leases", "jobs", "ready", "dead")]
        return self.scripts["reap"](keys=keys, args=[self.prefix, self.config.max_attempts])

    def dead_letters(self) -> list[str]:
        return [x.decode() for x in self._r.lrange(self.key("dead"), 0, -1)]

    def purge(self) -> None:
        _redis.delete_prefix(self._r, self.prefix)

    def delete(self) -> None:
        self.purge()

    def close(self) -> None:
        if self._r is not None:
            self._r.close()
            self._r = None


class RedisListDelivery(Delivery):
    def __init__(self, consumer: "RedisListConsumer", job_id: str, payload: bytes, attempt: int) -> None:
        self._c = consumer
        self.job_id, self.payload, self.attempt = job_id, payload, attempt

    def _keys(self, *names: str) -> list[str]:
        b = self._c.backend
        return [self._c.proc] + [b.key(n) for n in names]

    def ack(self, result: bytes = b"") -> None:
        if not self._c.backend.scripts["ack"](keys=self._keys("attempts", "leases", "jobs"), args=[self.job_id, self.attempt]):
            raise AckError(f"redis-list: job {self.job_id} is no longer in this worker's processing list (reaped after its lease or heartbeat expired)")

    def nack(self, requeue: bool = True) -> None:
        b = self._c.backend
        keys = self._keys("attempts", "leases", "jobs", "ready", "dead")
        if not b.scripts["nack"](keys=keys, args=[self.job_id, int(requeue), b.config.max_attempts, self.attempt]):
            raise AckError(f"redis-list: job {self.job_id} is no longer in this worker's processing list (reaped)")

    def heartbeat(self) -> None:
        b = self._c.backend
        if not b.scripts["extend"](keys=self._keys("attempts", "leases"), args=[self.job_id, int(b.config.timeout_s * 1000), self.attempt]):
            raise AckError(f"redis-list: job {self.job_id} was reaped; its lease cannot be extended")


class RedisListConsumer(Consumer):
    def __init__(self, backend: RedisListBackend, name: str) -> None:
        self.backend = backend
        self.name = name
        self.proc = backend.key(f"proc:{name}")
        self._hb_key = backend.key(f"hb:{name}")
        self._r = _redis.client(backend.config)
        self._stop = threading.Event()
        self._beat()
        self._r.sadd(backend.key("workers"), name)
        self._thread = threading.Thread(target=self._liveness, name=f"redis-list-hb-{name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        self._r.set(self._hb_key, b"1", px=int(self.backend.config.heartbeat_s * 1000))

    def _liveness(self) -> None:
        # One thread per consumer: refresh this worker's heartbeat key at a third of its
        # TTL (survives one slow round trip) and run the reaper a few times per timeout.
        config = self.backend.config
        reap_every = max(0.2, min(config.heartbeat_s, config.timeout_s) / 4)
        next_reap = time.monotonic()
        while not self._stop.wait(min(config.heartbeat_s / 3, reap_every)):
            try:
                self._beat()
                if time.monotonic() >= next_reap:
                    self.backend.reap()
                    next_reap = time.monotonic() + reap_every
            except redis.RedisError:
                pass  # cut off: our key expires and our jobs are reaped by others, as designed

    def receive(self, timeout_s: float) -> RedisListDelivery | None:
        b = self.backend
        end = time.monotonic() + timeout_s
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            job_id = self._r.blmove(b.key("ready"), self.proc, min(remaining, _redis.BLOCK_S), "RIGHT", "LEFT")
            if job_id is None:
                continue
            keys = [self.proc, b.key("attempts"), b.key("leases"), b.key("jobs")]
            claimed = b.scripts["claim"](keys=keys, args=[job_id, int(b.config.timeout_s * 1000)], client=self._r)
            if claimed:  # else the job was purged under us
                return RedisListDelivery(self, job_id.decode(), claimed[1], int(claimed[0]))

    def close(self) -> None:
        """Stop the heartbeat and hand this consumer's unacknowledged jobs back at once."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            self._r.delete(self._hb_key)
            self.backend.reap()
        except redis.RedisError:
            pass  # cut off: the heartbeat key expires and another consumer reaps our jobs
        self._r.close()
