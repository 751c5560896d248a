"""``redis-streams``: a Redis stream with one consumer group (XREADGROUP / XACK / XAUTOCLAIM).

Keys under ``lqs:<queue>:``: ``stream`` (entries with fields ``job`` and ``payload``; the
group ``workers`` reads it) and ``dead`` (list of dead-lettered job ids).

When its buffer is empty, ``receive`` first claims up to ``prefetch`` entries that have
been pending longer than ``timeout_s`` (``XAUTOCLAIM`` with that min-idle time; the
claim counts a delivery; one look at most every ``min(timeout_s / 4, 1 s)``), else reads up to ``prefetch`` new ones (``XREADGROUP COUNT
prefetch ... >``), buffers them in the consumer and hands them out one by one; a
buffered entry older than ``timeout_s`` is not handed out (another consumer may have
claimed it). Ack, nack and heartbeat are Lua scripts that first check that this
consumer still owns the entry in the pending list: Redis's own ``XACK`` does not check
the owner, so without it a worker whose job was claimed by another after a timeout
would "successfully" ack a job that is running elsewhere. ``ack_many`` settles a whole
batch in one script call (owner-checked by one ranged ``XPENDING`` of this consumer's
entries, then one ``XACK`` for those still owned). Acked entries are trimmed, not deleted
one by one: the same call trims the stream (``XTRIM MINID ~``) below the group's oldest
pending entry, so the stream keeps the live jobs and, above the oldest of them, at most
what they span (plus part of one stream node).

| knob | mapping |
| --- | --- |
| ``heartbeat_s`` | how often the worker resets the entry's idle time (``XCLAIM <me> 0 <id> JUSTID``) |
| ``timeout_s`` | ``XAUTOCLAIM`` min-idle-time: an entry idle that long is taken over by the next consumer that polls |
| ``prefetch`` | entries per ``XREADGROUP COUNT`` / ``XAUTOCLAIM COUNT``, held in the consumer until handed out (their idle time runs meanwhile) |
| ``max_attempts`` | the pending list's delivery counter; an entry claimed for the (max+1)-th time, or nacked on the last, is dead-lettered |

What it cannot do: there is no broker-side timer; redelivery happens only when some
consumer polls. ``nack(requeue=True)`` has no Redis primitive: the entry is made
immediately claimable (its idle time set past ``timeout_s``). Durability as for
``redis-list``: Redis's reply, as durable as the server's persistence setting.
"""
from __future__ import annotations

import collections
import time
import uuid

import redis

from baselines import _redis
from baselines.base import AckError, Backend, BackendError, Consumer, Delivery, new_job_id
from baselines.servers import REDIS

GROUP = "workers"
# Idle time given to a nacked entry so that any consumer's XAUTOCLAIM takes it (~11 days).
_NACK_IDLE_MS = 10**9
WAIT_MS = 2000  # how long a confirm waits for ``replicas_to_wait`` replicas

# KEYS: stream, dead. ARGV: group, consumer, entry id, action, job id, max_attempts, nack idle ms, attempt.
# action: ack | extend | requeue (arg: dead-letter if the delivery counter >= arg) | kill.
# -> 0 when this delivery no longer owns the entry (another consumer claimed it, or this
# consumer re-claimed it as a newer delivery: the delivery counter fences); 1 done; 2 dead-lettered.
_SETTLE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] or p[1][4] ~= tonumber(ARGV[8]) then return 0 end
local action = ARGV[4]
if action == 'extend' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
  return 1
end
if action == 'requeue' and p[1][4] < tonumber(ARGV[6]) then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[7], 'JUSTID')
  return 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if action == 'ack' then return 1 end
redis.call('RPUSH', KEYS[2], ARGV[5])
return 2
"""

# KEYS: stream. ARGV: group, consumer, the lowest and highest entry id, then (entry id, attempt)
# pairs. -> one 1 (acked) or 0 (no longer owned by this delivery, as in _SETTLE) per pair; the
# owned ones are acked together. The owner check is one ranged XPENDING of this consumer's own
# pending entries over the batch's span (paged; an entry it does not list is not this
# consumer's), not one XPENDING per entry. Then the stream is trimmed below the group's oldest
# pending entry, or below the batch's highest entry when none is pending: an entry below
# either was delivered (a group reads in id order) and is no longer pending, so settled.
_ACK_MANY = """
local pending, page, from = {}, (#ARGV - 4) / 2 + 1, ARGV[3]
while true do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], from, ARGV[4], page, ARGV[2])
  for _, e in ipairs(p) do pending[e[1]] = e[4] end
  if #p < page then break end
  from = '(' .. p[#p][1]
end
local owned, out = {}, {}
for i = 5, #ARGV, 2 do
  if pending[ARGV[i]] == tonumber(ARGV[i + 1]) then
    owned[#owned + 1] = ARGV[i]
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #owned > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(owned))
  local oldest = redis.call('XPENDING', KEYS[1], ARGV[1])[2]
  redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest or ARGV[4])
end
return out
"""
# Entries per _ACK_MANY call (Lua's unpack and the argument stack stay far from their limits).
ACK_CHUNK = 1000


def _id_order(entry_id: str | bytes) -> tuple[int, int]:
    """A stream entry id ("<ms>-<seq>") as Redis orders it (not as a string sorts)."""
    ms, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")
    return int(ms), int(seq)


class RedisStreamsBackend(Backend):
    name = "redis-streams"
    fencing_token = True  # the pending list's delivery counter
    servers = (REDIS,)
    durability = "XADD reply; on disk only as far as the server's appendonly/appendfsync settings"

    # A confirm waits for this many replicas to have the write (``WAIT``); 0: the primary's reply.
    replicas_to_wait = 0

    def __init__(self, config) -> None:
        super().__init__(config)
        self.prefix = f"lqs:{config.queue}:"
        self.stream = self.prefix + "stream"
        self.dead = self.prefix + "dead"
        self._r: redis.Redis | None = None

    def client(self) -> redis.Redis:
        """A new client for the queue's Redis (one server here; Sentinel's primary for ``redis-sentinel``)."""
        return _redis.client(self.config)

    def ping(self, r: redis.Redis) -> None:
        _redis.ping(self.name, self.config, r)

    def connect(self) -> None:
        self._r = self.client()
        self.ping(self._r)
        try:
            self._r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.settle_script = self._r.register_script(_SETTLE)
        self.ack_many_script = self._r.register_script(_ACK_MANY)

    def add_jobs(self, jobs: list[tuple[str, bytes]]) -> None:
        """XADD ``jobs`` in one round trip; with ``replicas_to_wait``, then ``WAIT`` on the same connection."""
        pipe = self._r.pipeline(transaction=False)
        for job_id, payload in jobs:
            pipe.xadd(self.stream, {"job": job_id, "payload": payload})
        if self.replicas_to_wait:
            pipe.wait(self.replicas_to_wait, WAIT_MS)
        replies = pipe.execute()
        if self.replicas_to_wait and replies[-1] < self.replicas_to_wait:
            raise BackendError(f"{self.name}: {len(jobs)} job(s) answered by the primary but received by "
                               f"{replies[-1]} replica(s) within {WAIT_MS} ms (WAIT {self.replicas_to_wait})")

    def enqueue(self, payload: bytes, job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        self.add_jobs([(job_id, payload)])
        return job_id

    def _enqueue_batch(self, jobs: list[tuple[str, bytes]], window: int) -> None:
        """Pipelined: ``window`` XADDs per round trip."""
        for start in range(0, len(jobs), window):
            self.add_jobs(jobs[start:start + window])

    def consumer(self, worker_id: str) -> "RedisStreamsConsumer":
        return RedisStreamsConsumer(self, f"{worker_id}:{uuid.uuid4().hex[:8]}")

    def dead_letters(self) -> list[str]:
        return [x.decode() for x in self._r.lrange(self.dead, 0, -1)]

    def purge(self) -> None:
        _redis.delete_prefix(self._r, self.prefix)
        self._r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)

    def delete(self) -> None:
        _redis.delete_prefix(self._r, self.prefix)

    def close(self) -> None:
        if self._r is not None:
            self._r.close()
            self._r = None

    def settle(self, consumer: str, entry_id: str, action: str, job_id: str, attempt: int) -> int:
        args = [GROUP, consumer, entry_id, action, job_id, self.config.max_attempts, _NACK_IDLE_MS, attempt]
        return self.settle_script(keys=[self.stream, self.dead], args=args)


def _refused(backend: RedisStreamsBackend, action: str, job_id: str, exc: Exception) -> str:
    """Why an ack/nack/heartbeat did not reach Redis: the entry stays pending, claimed again after ``timeout_s``."""
    return (f"{backend.name}: cannot {action} job {job_id}: {type(exc).__name__}: {' '.join(str(exc).split())} "
            f"(it stays pending and is redelivered after {backend.config.timeout_s:g}s)")


class RedisStreamsDelivery(Delivery):
    """``attempt`` is the pending list's exact delivery counter, and so the fencing ``token``."""

    def __init__(self, consumer: "RedisStreamsConsumer", entry_id: str, job_id: str, payload: bytes, attempt: int) -> None:
        self._c = consumer
        self.entry_id = entry_id
        self.job_id, self.payload, self.attempt = job_id, payload, attempt
        self.token = attempt
        self.received_at = time.monotonic()

    def refused(self, action: str) -> AckError:
        return AckError(f"redis-streams: cannot {action} job {self.job_id}: entry {self.entry_id} was claimed again "
                        f"after {self._c.backend.config.timeout_s:g}s idle (redelivered)")

    def _settle(self, action: str) -> int:
        try:
            done = self._c.backend.settle(self._c.name, self.entry_id, action, self.job_id, self.attempt)
        except redis.RedisError as exc:  # e.g. the primary is gone or refuses writes (NOREPLICAS)
            raise AckError(_refused(self._c.backend, action, self.job_id, exc)) from None
        if not done:
            raise self.refused(action)
        return done

    def ack(self, result: bytes = b"") -> None:
        [error] = self._c.ack_many([self])
        if error is not None:
            raise error

    def nack(self, requeue: bool = True) -> None:
        self._settle("requeue" if requeue else "kill")

    def heartbeat(self) -> None:
        self._settle("extend")


class RedisStreamsConsumer(Consumer):
    def __init__(self, backend: RedisStreamsBackend, name: str) -> None:
        self.backend = backend
        self.name = name
        self._r = backend.client()
        self._buffer: collections.deque[RedisStreamsDelivery] = collections.deque()
        self._next_claim = 0.0  # monotonic time of the next XAUTOCLAIM look

    def _claim_stale(self) -> list[RedisStreamsDelivery]:
        """Up to ``prefetch`` entries idle longer than ``timeout_s``, now this consumer's (dead-letters the exhausted)."""
        b = self.backend
        min_idle = int(b.config.timeout_s * 1000)
        while True:
            reply = self._r.xautoclaim(b.stream, GROUP, self.name, min_idle, start_id="0-0", count=b.config.prefetch)
            # an entry deleted under us (purge) has no fields; XAUTOCLAIM dropped it from the pending list
            claimed = [(entry_id.decode(), fields) for entry_id, fields in reply[1] if fields]
            if not reply[1]:
                return []
            pipe = self._r.pipeline(transaction=False)
            for entry_id, _ in claimed:
                pipe.xpending_range(b.stream, GROUP, min=entry_id, max=entry_id, count=1)
            out = []
            for (entry_id, fields), info in zip(claimed, pipe.execute()):
                job_id = fields[b"job"].decode()
                attempt = info[0]["times_delivered"] if info else 1
                if attempt > b.config.max_attempts:
                    b.settle(self.name, entry_id, "kill", job_id, attempt)
                else:
                    out.append(RedisStreamsDelivery(self, entry_id, job_id, fields[b"payload"], attempt))
            if out:
                return out

    def _read_new(self, block_ms: int | None) -> list[RedisStreamsDelivery]:
        b = self.backend
        reply = self._r.xreadgroup(GROUP, self.name, {b.stream: ">"}, count=b.config.prefetch, block=block_ms)
        return [RedisStreamsDelivery(self, entry_id.decode(), fields[b"job"].decode(), fields[b"payload"], 1)
                for _stream, entries in reply or () for entry_id, fields in entries if fields]

    def _next_buffered(self) -> RedisStreamsDelivery | None:
        expired = time.monotonic() - self.backend.config.timeout_s
        while self._buffer:
            d = self._buffer.popleft()
            if d.received_at > expired:
                return d
            # else: idle past timeout_s, claimable by others; left in the pending list for XAUTOCLAIM
        return None

    def receive(self, timeout_s: float) -> RedisStreamsDelivery | None:
        """The next buffered delivery; when none, one claim and one read of up to ``prefetch`` (waiting up to ``timeout_s``)."""
        end = time.monotonic() + timeout_s
        while True:
            d = self._next_buffered()
            if d is not None:
                return d
            if time.monotonic() >= self._next_claim:
                # at most every min(timeout_s / 4, BLOCK_S): a stale entry waits at most that much past timeout_s
                self._next_claim = time.monotonic() + min(self.backend.config.timeout_s / 4, _redis.BLOCK_S)
                self._buffer.extend(self._claim_stale())
                if self._buffer:
                    continue
            remaining = end - time.monotonic()
            # no BLOCK when the time is up: one look at what is already there
            block_ms = max(1, int(min(remaining, _redis.BLOCK_S) * 1000)) if remaining > 0 else None
            self._buffer.extend(self._read_new(block_ms))
            if not self._buffer and remaining <= 0:
                return None

    def ack_many(self, deliveries: list[RedisStreamsDelivery], results: list[bytes] | None = None) -> list[AckError | None]:
        """One script call per ``ACK_CHUNK`` deliveries: owner-checked by one ranged ``XPENDING``, the owned ones acked and deleted together."""
        b = self.backend
        out: list[AckError | None] = []
        for start in range(0, len(deliveries), ACK_CHUNK):
            chunk = deliveries[start:start + ACK_CHUNK]
            span = sorted((d.entry_id for d in chunk), key=_id_order)
            args = [GROUP, self.name, span[0], span[-1]] + [x for d in chunk for x in (d.entry_id, d.attempt)]
            try:
                done = b.ack_many_script(keys=[b.stream], args=args, client=self._r)
            except redis.RedisError as exc:  # e.g. the primary is gone or refuses writes (NOREPLICAS)
                out.extend(AckError(_refused(b, "ack", d.job_id, exc)) for d in chunk)
                continue
            out.extend(None if ok else d.refused("ack") for d, ok in zip(chunk, done))
        return out

    def close(self) -> None:
        """Make this consumer's pending entries claimable at once, as a closing connection would."""
        try:
            for p in self._r.xpending_range(self.backend.stream, GROUP, min="-", max="+", count=1000, consumername=self.name):
                self._r.xclaim(self.backend.stream, GROUP, self.name, 0, [p["message_id"]], idle=_NACK_IDLE_MS, justid=True)
        except redis.RedisError:
            pass  # cut off: the entries go idle and are claimed after timeout_s
        self._r.close()
