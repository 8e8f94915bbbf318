#!/usr/bin/python3
"""Rebalances mid-stream, and the fenced writer (docs/design.md, "Fencing").

A consumes; B joins and later leaves cleanly; C joins and is killed -9.
In between, A is stalled in the middle of a commit (fault injection: its
watched read done, EXEC not yet sent) long enough for the group to give
every partition to B; when A resumes, its commit must be refused.  After
the stream ends the aggregates equal the recomputation exactly.
"""
import os
import signal
import sys
import time

import harness as h

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000

svc = h.Services("rebalance")
recs = h.generate(N, 1500, seed=9090)
stall = os.path.join(svc.dir, "stall-a")
batch = {"batch": "\n  max_orders: 500\n  max_ms: 50"}
a = h.Daemon(svc, "a", extra=batch, kafka_extra={"max.poll.interval.ms": "7000"},
             env={"TIERD_FAULT_COMMIT_STALL_FILE": stall})
a.start()
producer = h.produce_in_background(svc.bootstrap, recs, seconds=30)


def owners():
    return [(svc.redis.hget("tierd:{orders.%d}:meta" % p, "owner") or b"").decode() for p in range(8)]


def wait_for(cond, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


wait_for(lambda: owners().count("a") == 8, "a to own all partitions")
time.sleep(2)
b = h.Daemon(svc, "b", extra=batch).start()
wait_for(lambda: "b" in owners() and "a" in owners(), "b to share the partitions")
h.log("a and b share: %s" % owners())

# Stall a inside a commit; the group gives everything to b.
open(stall, "w").close()
wait_for(lambda: owners().count("b") == 8, "b to take every partition from the stalled a", 90)
h.log("a stalled, b owns: %s" % owners())
os.unlink(stall)
wait_for(lambda: "commit refused" in a.log_text(), "a's commit to be refused", 60)
h.log("a's stale commit was refused")
assert a.alive()

# b leaves cleanly; c joins and dies.
assert b.term() == 0
c = h.Daemon(svc, "c", extra=batch).start()
wait_for(lambda: "c" in owners(), "c to own a partition")
c.kill(signal.SIGKILL)
h.log("c killed while owning %d partitions" % owners().count("c"))

producer.join()
ends = h.end_offsets(svc.bootstrap, "orders")
want_state, want_dead = h.model(recs)
h.wait_drained(svc, ends, daemons=[a])
n_ev, rep_ev = h.check_tier_events(svc, want_state, daemons=[a])
h.log("%d tier changes on the topic, none missing, no gap (%d republished)" % (n_ev, rep_ev))
assert a.term() == 0
h.compare_state(h.read_state(svc.redis), want_state)
h.log("aggregates equal the recomputation after the rebalances: %d customer-months" % len(want_state))
stats = h.last_stats(a.log_text())
assert int(stats["fenced"]) >= 1
h.check_dead_letters(svc.bootstrap, recs, want_dead, allow_repeats=True)
h.log("PASS")
