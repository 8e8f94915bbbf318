#!/usr/bin/python3
"""Redis and Kafka going away mid-stream (docs/operations.md, "Outages").

While orders stream in: Redis is killed -9 and restarted, then stopped for
several seconds, then the broker is stopped and restarted.  tierd must stay
up, say clearly what it is waiting for, pause rather than spin, and resume
exactly where it stopped: the aggregates equal the recomputation.  Redis
runs with appendfsync always, as a deployment that wants no acknowledged
write lost would run it.
"""
import os
import sys
import time

import harness as h

N = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000

os.environ["TIERD_REDIS_APPENDFSYNC"] = "always"
svc = h.Services("faults")
recs = h.generate(N, 1500, seed=3131)
d = h.Daemon(svc, "f", extra={"batch": "\n  max_orders: 1000\n  max_ms: 50",
                               "redis": "\n  host: 127.0.0.1\n  port: %d\n  timeout_ms: 1000" % svc.redis_port})
d.start()
producer = h.produce_in_background(svc.bootstrap, recs, seconds=30)


def applied():
    try:
        return int(h.last_stats(d.log_text())["applied"])
    except (IndexError, KeyError):
        return 0


def wait_progress(what, timeout=60):
    """Waits until tierd has applied more than now (stats every 10 s)."""
    start, deadline = applied(), time.time() + timeout
    while time.time() < deadline:
        assert d.alive(), "tierd died during %s:\n%s" % (what, d.log_text()[-3000:])
        if applied() > start:
            return
        time.sleep(0.5)
    raise AssertionError("no progress after " + what)


time.sleep(4)
h.log("kill -9 Redis and start it again")
svc.run("restart-redis", "--kill")
time.sleep(2)
assert d.alive()

h.log("Redis down for 6 s")
svc.run("stop-redis")
time.sleep(6)
assert d.alive(), "tierd must survive a Redis outage"
cpu_before = d.cpu_seconds()
time.sleep(3)
assert d.cpu_seconds() - cpu_before < 1.5, "tierd must back off, not spin, while Redis is down"
svc.run("start-redis")
wait_progress("the Redis outage")
log = d.log_text()
assert "pausing this partition and retrying" in log
assert "applying again after a retry; resuming" in log

h.log("broker down for 6 s")
svc.run("stop-kafka")
time.sleep(6)
assert d.alive(), "tierd must survive a broker outage"
svc.run("start-kafka")

producer.join()
ends = h.end_offsets(svc.bootstrap, "orders")
want_state, want_dead = h.model(recs)
h.wait_drained(svc, ends, daemons=[d])
assert d.term() == 0
h.compare_state(h.read_state(svc.redis), want_state)
h.log("aggregates equal the recomputation after the outages: %d customer-months" % len(want_state))
h.check_dead_letters(svc.bootstrap, recs, want_dead, allow_repeats=True)
h.log("PASS")
