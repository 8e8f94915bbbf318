#!/usr/bin/python3
"""Orders in, exact aggregates out (docs/behaviour.md, "Aggregates").

>= 100 000 orders over 8 partitions of a real broker, with exact re-sends
(the same order at a new offset), returns, both Avro framings, a non-UTC
time zone, and 16 kinds of bad record.  After the drain:
  - Redis holds exactly the aggregates an independent recomputation gives;
  - the dead-letter topic holds exactly the bad records, each once, with
    the right reason and its source coordinates;
  - SIGTERM stops the daemon with status 0.
"""
import collections
import random
import sys

import harness as h

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000

svc = h.Services("exact")
recs = h.generate(N, 2000, seed=20261123)
h.log("producing %d records" % len(recs))
h.produce(svc.bootstrap, "orders", recs)
ends = h.end_offsets(svc.bootstrap, "orders")
want_state, want_dead = h.model(recs)
kinds = collections.Counter(want_dead.values())
h.log("model: %d customer-months, dead letters by reason %s" % (len(want_state), dict(kinds)))
assert len(kinds) >= 10, "the stream must hold at least 10 kinds of bad record"
assert sum(1 for r in recs if r.expect is None and r.order is not None) >= N

d = h.Daemon(svc, "a").start()
h.wait_drained(svc, ends, daemons=[d])
assert d.term() == 0, "SIGTERM must stop tierd with status 0"

h.compare_state(h.read_state(svc.redis), want_state)
h.log("aggregates equal the recomputation: %d customer-months" % len(want_state))

dead = h.read_dead_letters(svc.bootstrap)
got = {}
for hdr, key, value in dead:
    coord = (int(hdr["tierd.source.partition"]), int(hdr["tierd.source.offset"]))
    assert coord not in got, "dead letter %s published twice" % (coord,)
    assert hdr["tierd.source.topic"] == "orders"
    assert hdr["tierd.reason_text"], "every dead letter explains itself"
    got[coord] = hdr["tierd.reason"]
    rec = next(r for r in recs if (r.partition, r.offset) == coord)
    assert value == rec.value, "dead letter %s must carry the original bytes" % (coord,)
    assert key == rec.key, "dead letter %s must carry the original key" % (coord,)
assert got == want_dead, "dead letters differ: missing %s, unexpected %s, wrong %s" % (
    sorted(set(want_dead) - set(got))[:5], sorted(set(got) - set(want_dead))[:5],
    [(k, got[k], want_dead[k]) for k in want_dead if k in got and got[k] != want_dead[k]][:5])
h.log("dead-letter topic holds exactly the %d bad records with the right reasons" % len(got))

stats = h.last_stats(d.log_text())
assert int(stats["duplicates"]) == h.model.duplicates >= N // 100, (stats, h.model.duplicates)
assert int(stats["dead"]) == len(want_dead)
h.log("re-sent orders ignored and counted: %s" % stats["duplicates"])
h.log("PASS")
