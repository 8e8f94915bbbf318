#!/usr/bin/python3
"""kill -9 at random moments (docs/design.md, "Exactly once").

While 100 000 orders stream in, tierd is killed with SIGKILL at least 10
times at random moments and restarted each time.  Small batches make the
kills land between reads and commits.  After the last restart the
aggregates equal the recomputation exactly and every bad record is on the
dead-letter topic.
"""
import random
import signal
import sys
import time

import harness as h

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
KILLS = int(sys.argv[2]) if len(sys.argv) > 2 else 12

svc = h.Services("crash")
rnd = random.Random(7)
recs = h.generate(N, 1500, seed=4242)
producer = h.produce_in_background(svc.bootstrap, recs, seconds=25)

kills, progressed = 0, 0
d = None
last = None
while kills < KILLS or producer.is_alive():
    # One static member (group.instance.id) across restarts: the broker hands
    # its partitions straight back instead of waiting out the session.
    d = h.Daemon(svc, "crash-%d" % kills, extra={"batch": "\n  max_orders: 300\n  max_ms: 20"},
                 kafka_extra={"group.instance.id": "crash"}).start()
    time.sleep(rnd.uniform(0.8, 2.5))
    if kills >= KILLS and not producer.is_alive():
        break
    assert d.alive(), "tierd died on its own:\n" + d.log_text()[-2000:]
    d.kill(signal.SIGKILL)
    kills += 1
    offsets = tuple(svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset") for p in range(8))
    progressed += offsets != last
    last = offsets
producer.join()
h.log("killed tierd %d times, %d of them after it had made progress" % (kills, progressed))
assert kills >= 10 and progressed >= 5, "the kills must land while tierd is consuming"

ends = h.end_offsets(svc.bootstrap, "orders")
want_state, want_dead = h.model(recs)
h.wait_drained(svc, ends, daemons=[d])
n_ev, rep_ev = h.check_tier_events(svc, want_state, daemons=[d])
h.log("%d tier changes on the topic, none missing, no gap (%d republished after a kill)" % (
    n_ev, rep_ev))
assert d.term() == 0
h.compare_state(h.read_state(svc.redis), want_state)
h.log("aggregates equal the recomputation after %d kills: %d customer-months" % (kills, len(want_state)))
repeats = h.check_dead_letters(svc.bootstrap, recs, want_dead, allow_repeats=True)
h.log("all %d bad records dead-lettered (%d republished after a kill)" % (len(want_dead), repeats))
h.log("PASS")
