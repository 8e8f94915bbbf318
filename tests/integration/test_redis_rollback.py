#!/usr/bin/python3
"""Redis loses acknowledged writes under a running tierd, twice.

Redis runs with appendonly yes (scripts/services).  While tierd drains
months of orders, the test copies Redis' AOF directory (client writes
paused for the copy, so it ends between two transactions), lets tierd go
on through month boundaries (reviews, tier changes, quota events, all
published), then stops Redis by its pid, puts the older AOF back and starts
Redis again on the same port.  tierd keeps running throughout.  The rule
(docs/design.md, "Redis going back in time"): tierd sees the stored epoch
or offset is older than its own, claims the partition again and consumes
from the stored offset, so the lost span is applied and decided again.

  rollback 1, under flow: orders keep arriving while Redis is restored;
  rollback 2, at rest: the lost span ends with the stream drained, so no
              new record prompts tierd; it must still notice within
              IDLE_WAIT s.  Its first rewinds' seeks fail (fault
              injection, as a seek that timed out): the rewind must stay
              owed until a seek succeeds.  Then the last month's orders
              arrive.

Checked at the end, against the independent models (harness.model,
events_model.Model):
  - the aggregates equal the recomputation exactly;
  - tier-changes and quota-events hold exactly the expected events, tier
    changes numbered 1..n per customer;
  - every event_id (header tierd.event_id) published more than once, by a
    re-decision or from a restored outbox, has byte-identical values: a
    consumer that dedupes on event_id must not lose information;
  - each rolled-back span held a month boundary (reviews decided again),
    and events were in fact published again.
"""
import os
import time

import harness as h
import events_model as em

SEED = 5151
MONTHS = 8
IDLE_WAIT = 30

now = h.now_ms()
base = h.month_index(now, em.TZ) - MONTHS
policy = em.Policy(holiday_month=base + 2)
sc = em.Scenario(SEED, 200, base, MONTHS, h.partition_of)
model = em.Model(policy)

svc = h.Services("rollback")
policy_path = os.path.join(svc.dir, "policy-rollback.yaml")
with open(policy_path, "w") as f:
    f.write(policy.text())
seek_fail = os.path.join(svc.dir, "seek-fail")
d = h.Daemon(svc, "rb", extra={"policy": policy_path, "idle_close_after_s": 31622400,
                               "batch": "\n  max_orders: 100\n  max_ms: 20"},
             env={"TIERD_FAULT_SEEK_FAIL_FILE": seek_fail}).start()
problems, all_recs = [], []


def applied():
    return sum(v or 0 for v in h.meta_field(svc, "offset").values())


def drained(ends):
    return lambda: all((h.meta_field(svc, "offset")[p] or 0) >= hi for p, hi in ends.items() if hi)


def phase(lo, hi):
    orders = [(p, o) for p, o in sc.orders if base + lo <= sc.month_index(o) < base + hi]
    for p, o in orders:
        model.order(p, o)
    recs = [h.Rec(p, o["customer_id"].encode(), h.encode(o), o) for p, o in orders]
    all_recs.extend(recs)
    return recs


def rollback(name, snap, at_snapshot):
    """Restores snap, after checking that the span it loses holds a month
    boundary; returns where tierd's log stood before."""
    reviewed = h.meta_field(svc, "reviewed")
    offsets = h.meta_field(svc, "offset")
    boundary = [p for p in reviewed if (reviewed[p] or 0) > (at_snapshot["reviewed"][p] or 0)]
    lost = sum((offsets[p] or 0) - (at_snapshot["offset"][p] or 0) for p in offsets)
    assert boundary, "%s: no month was reviewed in the span to lose" % name
    assert lost > 0, "%s: nothing was committed in the span to lose" % name
    log_before = len(d.log_text())
    h.redis_restore(svc, snap)
    h.log("%s: Redis restarted from the copy, losing %d applied records and the reviews of "
          "partitions %s" % (
        name, lost, boundary))
    return log_before


def snapshot(name):
    snap = os.path.join(svc.dir, "aof-" + name)
    h.redis_snapshot(svc, snap)
    at = {"offset": h.meta_field(svc, "offset"), "reviewed": h.meta_field(svc, "reviewed")}
    h.log("%s: AOF copied at %d records applied, months reviewed %s" % (
        name, sum(v or 0 for v in at["offset"].values()),
        sorted({em.ym((v // 100) * 12 + v % 100 - 1) for v in at["reviewed"].values() if v})))
    return snap, at


def rule_fired(since, name):
    text = d.log_text()[since:]
    lost = text.count("lost writes")
    claimed = text.count("re-claimed")
    h.log("%s: tierd logged 'lost writes' %d times, 're-claimed' %d times" % (name, lost, claimed))
    return claimed


# Profiles first, then orders.
prof = [h.Rec(p, cid.encode(), em.profile_value(cid, g, fmt, now)) for p, cid, g, fmt in sc.profiles]
h.produce(svc.bootstrap, "customer-profiles", prof)
for p, cid, g, fmt in sc.profiles:
    model.profile(p, cid, g, fmt)
pends = h.end_offsets(svc.bootstrap, "customer-profiles")
h.wait_for(lambda: all((h.meta_field(svc, "poffset")[p] or 0) >= hi for p, hi in pends.items() if hi),
           "the profiles", timeout=120, daemons=[d])

# --- rollback 1: under flow --------------------------------------------
recs = phase(0, 4)
producer = h.produce_in_background(svc.bootstrap, recs, 14)
h.wait_for(lambda: applied() >= len(recs) // 4, "a quarter of the first months", timeout=120,
           daemons=[d])
snap1, at1 = snapshot("rollback 1")
h.wait_for(lambda: applied() >= len(recs) * 7 // 10 and
           any((v or 0) > (at1["reviewed"][p] or 0) for p, v in h.meta_field(svc, "reviewed").items())
           and h.outbox_len(svc.redis) == 0,
           "tierd to pass a month boundary", timeout=120, daemons=[d])
since = rollback("rollback 1", snap1, at1)
producer.join()
ends = h.end_offsets(svc.bootstrap, "orders")
h.wait_for(drained(ends), "rollback 1: the lost span to be applied again", timeout=180, daemons=[d])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox", timeout=120, daemons=[d])
if not rule_fired(since, "rollback 1"):
    problems.append("rollback 1: tierd never re-claimed a partition after Redis went back")

# --- rollback 2: the stream at rest afterwards ---------------------------
recs = phase(4, 7)
producer = h.produce_in_background(svc.bootstrap, recs, 8)
start = applied()
h.wait_for(lambda: applied() >= start + len(recs) * 3 // 10, "30 % of the next months",
           timeout=120, daemons=[d])
snap2, at2 = snapshot("rollback 2")
producer.join()
ends = h.end_offsets(svc.bootstrap, "orders")
h.wait_for(drained(ends), "the next months", timeout=180, daemons=[d])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox", timeout=120, daemons=[d])
# The rewinds' seeks fail for a while (as one that times out): the
# reading stays past the lost span, so each rewind must stay owed, and
# nothing polled from there may be applied.
open(seek_fail, "w").close()
since = rollback("rollback 2", snap2, at2)
h.wait_for(lambda: d.log_text()[since:].count("fault injection: seek refused") >= 2,
           "rollback 2: tierd to notice, and its seeks to fail twice", timeout=IDLE_WAIT,
           daemons=[d])
os.unlink(seek_fail)
deadline = time.time() + IDLE_WAIT
while time.time() < deadline and not drained(ends)():
    assert d.alive(), "tierd died:\n" + d.log_text()[-3000:]
    time.sleep(0.5)
if drained(ends)():
    h.log("rollback 2: the lost span applied again with no new record")
else:
    offs = h.meta_field(svc, "offset")
    said = d.log_text()[since:]
    problems.append("rollback 2: %d s after Redis came back with older state, with no new "
                    "record since, tierd has not applied the lost span (stored offsets %s, topic "
                    "ends %s) and has not noticed: %d 'lost writes' lines in its log since" % (
                        IDLE_WAIT, [offs[p] for p in sorted(offs)], [ends[p] for p in sorted(ends)],
                        said.count("lost writes")))
# The last month's orders: a new record on every partition.
recs = phase(7, 8)
h.produce(svc.bootstrap, "orders", recs)
ends = h.end_offsets(svc.bootstrap, "orders")
h.wait_for(drained(ends), "the last month", timeout=180, daemons=[d])
if not rule_fired(since, "rollback 2"):
    problems.append("rollback 2: tierd never re-claimed a partition after Redis went back")

# --- the verdict ----------------------------------------------------------
probs, stats = em.check_published(h, svc, model, daemons=[d])
problems += probs
for topic, (n, distinct, repeated) in stats.items():
    h.log("%s: %d records, %d distinct events, %d published more than once" % (
        topic, n, distinct, repeated))
    if not repeated:
        problems.append("%s: nothing was published twice: the rollbacks re-decided nothing" % topic)
try:
    h.compare_state(h.read_state(svc.redis), h.model(all_recs)[0])
    h.log("aggregates equal the recomputation")
except AssertionError as e:
    problems.append("aggregates: %s" % e)
status = d.term()
if status != 0:
    problems.append("SIGTERM: tierd exited with %s" % status)
em.report(h, problems)
h.log("PASS")
