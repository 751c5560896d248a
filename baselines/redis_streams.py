"""``redis-streams``: a Redis stream with one consumer group (XREADGROUP / XACK / XAUTOCLAIM).

Keys under ``lqs:<queue>:``: ``stream`` (entries with fields ``job`` and ``payload``; the
group ``workers`` reads it) and ``dead`` (list of dead-lettered job ids).

``receive`` first claims one entry that has been pending longer than ``timeout_s``
(``XAUTOCLAIM`` with that min-idle time; the claim counts a delivery), else reads a new
one (``XREADGROUP ... >``). Ack, nack and heartbeat are Lua scripts that first check
that this consumer still owns the entry in the pending list: Redis's own ``XACK`` does
not check the owner, so without it a worker whose job was claimed by another after a
timeout would "successfully" ack a job that is running elsewhere. Acked entries are
deleted (``XDEL``), so the stream holds only live jobs.

| knob | mapping |
| --- | --- |
| ``heartbeat_s`` | how often the worker resets the entry's idle time (``XCLAIM <me> 0 <id> JUSTID``) |
| ``timeout_s`` | ``XAUTOCLAIM`` min-idle-time: an entry idle that long is taken over by the next consumer that polls |
| ``prefetch`` | not applicable: one entry per ``XREADGROUP COUNT 1`` |
| ``max_attempts`` | the pending list's delivery counter; an entry claimed for the (max+1)-th time, or nacked on the last, is dead-lettered |

What it cannot do: there is no broker-side timer; redelivery happens only when some
consumer polls. ``nack(requeue=True)`` has no Redis primitive: the entry is made
immediately claimable (its idle time set past ``timeout_s``). Durability as for
``redis-list``: Redis's reply, as durable as the server's persistence setting.
"""
from __future__ import annotations

import time
import uuid

import redis

from baselines import _redis
from baselines.base import AckError, Backend, Consumer, Delivery, new_job_id
from baselines.servers import REDIS

GROUP = "workers"
# Idle time given to a nacked entry so that any consumer's XAUTOCLAIM takes it (~11 days).
_NACK_IDLE_MS = 10**9

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


class RedisStreamsBackend(Backend):
    name = "redis-streams"
    servers = (REDIS,)
    durability = "XADD reply; on disk only as far as the server's appendonly/appendfsync settings"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.prefix = f"lqs:{config.queue}:"
        self.stream = self.prefix + "stream"
        self.dead = self.prefix + "dead"
        self._r: redis.Redis | None = None

    def connect(self) -> None:
        self._r = _redis.client(self.config)
        _redis.ping(self.name, self.config, self._r)
        try:
            self._r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.settle_script = self._r.register_script(_SETTLE)

    def enqueue(self, payload: bytes, job_id: str | None = None) -> str:
        job_id = job_id or new_job_id()
        self._r.xadd(self.stream, {"job": job_id, "payload": payload})
        return job_id

    def _enqueue_batch(self, jobs: list[tuple[str, bytes]], window: int) -> None:
        """Pipelined: ``window`` XADDs per round trip."""
        for start in range(0, len(jobs), window):
            pipe = self._r.pipeline(transaction=False)
            for job_id, payload in jobs[start:start + window]:
                pipe.xadd(self.stream, {"job": job_id, "payload": payload})
            pipe.execute()

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


class RedisStreamsDelivery(Delivery):
    """``attempt`` is the pending list's exact delivery counter."""

    def __init__(self, consumer: "RedisStreamsConsumer", entry_id: str, job_id: str, payload: bytes, attempt: int) -> None:
        self._c = consumer
        self.entry_id = entry_id
        self.job_id, self.payload, self.attempt = job_id, payload, attempt

    def _settle(self, action: str) -> int:
        done = self._c.backend.settle(self._c.name, self.entry_id, action, self.job_id, self.attempt)
        if not done:
            raise AckError(f"redis-streams: cannot {action} job {self.job_id}: entry {self.entry_id} was claimed again after {self._c.backend.config.timeout_s:g}s idle (redelivered)")
        return done

    def ack(self, result: bytes = b"") -> None:
        self._settle("ack")

    def nack(self, requeue: bool = True) -> None:
        self._settle("requeue" if requeue else "kill")

    def heartbeat(self) -> None:
        self._settle("extend")


class RedisStreamsConsumer(Consumer):
    def __init__(self, backend: RedisStreamsBackend, name: str) -> None:
        self.backend = backend
        self.name = name
        self._r = _redis.client(backend.config)

    def _claim_stale(self) -> RedisStreamsDelivery | None:
        b = self.backend
        min_idle = int(b.config.timeout_s * 1000)
        while True:
            reply = self._r.xautoclaim(b.stream, GROUP, self.name, min_idle, start_id="0-0", count=1)
            claimed = reply[1]
            if not claimed:
                return None
            entry_id, fields = claimed[0]
            if not fields:  # deleted under us (purge); XAUTOCLAIM dropped it from the pending list
                continue
            entry_id = entry_id.decode()
            job_id = fields[b"job"].decode()
            info = self._r.xpending_range(b.stream, GROUP, min=entry_id, max=entry_id, count=1)
            attempt = info[0]["times_delivered"] if info else 1
            if attempt > b.config.max_attempts:
                b.settle(self.name, entry_id, "kill", job_id, attempt)
                continue
            return RedisStreamsDelivery(self, entry_id, job_id, fields[b"payload"], attempt)

    def receive(self, timeout_s: float) -> RedisStreamsDelivery | None:
        b = self.backend
        end = time.monotonic() + timeout_s
        while True:
            stale = self._claim_stale()
            if stale is not None:
                return stale
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            block_ms = max(1, int(min(remaining, _redis.BLOCK_S) * 1000))
            reply = self._r.xreadgroup(GROUP, self.name, {b.stream: ">"}, count=1, block=block_ms)
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    if fields:
                        return RedisStreamsDelivery(self, entry_id.decode(), fields[b"job"].decode(), fields[b"payload"], 1)

    def ack_many(self, deliveries: list[RedisStreamsDelivery], results: list[bytes] | None = None) -> list[AckError | None]:
        """One pipelined round trip: the owner-checking ack script once per delivery."""
        b = self.backend
        pipe = self._r.pipeline(transaction=False)
        for d in deliveries:
            args = [GROUP, self.name, d.entry_id, "ack", d.job_id, b.config.max_attempts, _NACK_IDLE_MS, d.attempt]
            b.settle_script(keys=[b.stream, b.dead], args=args, client=pipe)
        return [None if done else AckError(
                    f"redis-streams: cannot ack job {d.job_id}: entry {d.entry_id} was claimed again after "
                    f"{b.config.timeout_s:g}s idle (redelivered)")
                for d, done in zip(deliveries, pipe.execute())]

    def close(self) -> None:
        """Make this consumer's pending entries claimable at once, as a closing connection would."""
        try:
            for p in self._r.xpending_range(self.backend.stream, GROUP, min="-", max="+", count=1000, consumername=self.name):
                self._r.xclaim(self.backend.stream, GROUP, self.name, 0, [p["message_id"]], idle=_NACK_IDLE_MS, justid=True)
        except redis.RedisError:
            pass  # cut off: the entries go idle and are claimed after timeout_s
        self._r.close()
