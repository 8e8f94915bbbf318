#!/usr/bin/python3
"""With a tiny prefetch the drain does not wait on librdkafka, and stays
exact (daemon/consumer.c, prefetch_bound and prefetch_wake; docs/design.md,
"The prefetch").  What the default prefetch costs in memory is measured by
scripts/bench (tierd's peak RSS), not here.

librdkafka 2.0.2's fetcher stops once the consumer queue holds
queued.min.messages records, and then looks again only when something
wakes it or a second has passed.  Here the bounds are tiny (100 records,
64 KB, 4 KB a partition a fetch) and the producer writes small batches, so
a fetch brings a few hundred records: the backlog needs well over a hundred
fetches.  Waiting out the second each time would take minutes; woken by
tierd, the drain takes seconds.  The waking seeks each partition to the
record after the last one tierd took, so the aggregates must still be
exact: nothing skipped, nothing counted twice.
"""
import time

import harness as h

N = 20_000
# One wait per fetch would cost about half a second on average: 120 fetches
# are a minute.  Generous for a loaded machine, far below the waits.
LIMIT_S = 30

svc = h.Services("prefetch")
recs = h.generate(N, 500, seed=20261126, bad_per_kind=2)
h.log("producing %d records in batches of at most 2 KB" % len(recs))
h.produce(svc.bootstrap, "orders", recs, config={"batch.size": 2000, "linger.ms": 5})
ends = h.end_offsets(svc.bootstrap, "orders")
want_state, want_dead = h.model(recs)

d = h.Daemon(svc, "p", kafka_extra={"queued.min.messages": "100",
                                    "queued.max.messages.kbytes": "64",
                                    "fetch.message.max.bytes": "4096"}).start()
# From the first commit on: joining the group is not what is measured.
h.wait_for(lambda: any((v or 0) > 0 for v in h.meta_field(svc, "offset").values()),
           "the first commit", timeout=120, daemons=[d])
t0 = time.monotonic()
h.wait_drained(svc, ends, timeout=600, daemons=[d])
took = time.monotonic() - t0
h.log("drained %d records in %.1f s after the first commit" % (len(recs), took))
assert d.term() == 0, "SIGTERM must stop tierd with status 0"

h.compare_state(h.read_state(svc.redis), want_state)
stats = h.last_stats(d.log_text())
assert int(stats["dead"]) == len(want_dead), (stats["dead"], len(want_dead))
assert int(stats["redelivered"]) == 0, "a wake-up seek must not deliver a record again"
h.log("aggregates equal the recomputation: %d customer-months; %d dead letters" % (
    len(want_state), len(want_dead)))
assert took < LIMIT_S, (
    "the drain took %.1f s: the fetcher waited out its second after each fetch" % took)
h.log("PASS")
