#!/usr/bin/python3
"""Decided events survive crashes (docs/design.md, "Events are never lost").

1. kill -9 between decision and publish: tierd decides tier changes and
   quota events while its publisher is held (fault injection), so they sit
   in the outbox; it is killed; a restarted tierd publishes every one of
   them, and any repeat carries the same event_id and the same bytes.
2. kill -9 during a review: tierd is held inside the review of a month,
   after deciding and before EXEC, and killed; after the restart every
   customer was reviewed exactly once for that month: no sequence gap, no
   second event for one (customer, review month).
"""
import collections
import os
import signal
import time

import harness as h

svc = h.Services("events")
tz = "Asia/Shanghai"
cur = h.month_index(h.now_ms(), tz)
stall_pub = os.path.join(svc.dir, "stall-publish")
stall_rev = os.path.join(svc.dir, "stall-review")
customers = ["EV-%02d" % i for i in range(24)]


def orders_for(month, day, qty, tag):
    t = h.month_start_ms(month, tz) + (day - 1) * 86400_000 + 3600_000
    recs = []
    for c in customers:
        o = h.order("%s-%s" % (c, tag), c, t, "SALE",
                    [{"sku": "S-1", "quantity": qty, "unit_price": 20000}])
        recs.append(h.Rec(h.partition_of(c), c.encode(), h.encode(o), o))
    return recs


def drained(recs_so_far):
    ends = h.end_offsets(svc.bootstrap, "orders")
    return lambda: all(int(svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset") or 0) >= hi
                       for p, hi in ends.items() if hi)


# --- 1. decisions held in the outbox, then kill -9 ----------------------
a = h.Daemon(svc, "a", env={"TIERD_FAULT_PUBLISH_STALL_FILE": stall_pub})
open(stall_pub, "w").close()
a.start()
first = orders_for(cur - 3, 2, 1000, "m0")  # first orders: NEW_CUSTOMER; 1000 > cap 100: quota
h.produce(svc.bootstrap, "orders", first)
h.wait_for(drained(first), "the first orders to be applied", daemons=[a])
held = h.outbox_ids(svc.redis)
h.log("%d events decided and held in the outbox" % len(held))
assert len(held) == len(customers) * 4, "each customer: NEW_CUSTOMER + WARNING, REACHED, EXCEEDED"
assert not h.read_topic(svc.bootstrap, "tier-changes"), "nothing may be published yet"
a.kill(signal.SIGKILL)
os.unlink(stall_pub)

b = h.Daemon(svc, "b").start()
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox to drain", daemons=[b])
tiers = h.decode_events(h.read_topic(svc.bootstrap, "tier-changes"), "tier_change.avsc")
quotas = h.decode_events(h.read_topic(svc.bootstrap, "quota-events"), "quota_event.avsc")
assert held == set(tiers) | set(quotas), "every held event is published after the crash"
for ev, _ in tiers.values():
    assert ev["reason"] == "NEW_CUSTOMER" and ev["previous_tier"] is None and ev["new_tier"] == 2
    assert ev["sequence"] == 1 and ev["event_id"] == "%s:tier:1" % ev["customer_id"]
h.log("after kill -9 all %d held events were published" % len(held))
assert b.term() == 0

# --- 2. kill -9 inside a review -----------------------------------------
# Months cur-3 and cur-2 are reviewed normally (new customers hold).  The
# review of cur-1, their third month, evaluates them: 1000 units a month at
# 200.00 with one SKU and default ratings scores 22.5 + 5 + 0.375 + 9 + 6 =
# 42.875, so T* = 4: INITIAL_EVALUATION 2 -> 4.  That review is held after
# deciding, before EXEC, and tierd is killed.
c = h.Daemon(svc, "c").start()
mid = orders_for(cur - 2, 2, 1000, "m1") + orders_for(cur - 1, 2, 1000, "m2")
h.produce(svc.bootstrap, "orders", mid)
h.wait_for(drained(mid), "months cur-2 and cur-1 to be applied", daemons=[c])
assert c.term() == 0

d = h.Daemon(svc, "d", env={"TIERD_FAULT_REVIEW_STALL_FILE": stall_rev})
open(stall_rev, "w").close()
d.start()
last = orders_for(cur, 1, 10, "m3")  # the first order of cur closes cur-1
h.produce(svc.bootstrap, "orders", last)
h.wait_for(lambda: "stalled before EXEC" in d.log_text(), "the review to stall", daemons=[d])
d.kill(signal.SIGKILL)
os.unlink(stall_rev)
want_reviewed = "%04d%02d" % ((cur - 1) // 12, (cur - 1) % 12 + 1)
parts = {h.partition_of(c) for c in customers}
assert any(svc.redis.hget("tierd:{orders.%d}:meta" % p, "reviewed").decode() != want_reviewed
           for p in parts), "the killed review must not have committed everywhere"

e = h.Daemon(svc, "e").start()
h.wait_for(drained(last), "the last orders to be applied", daemons=[e])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox to drain", daemons=[e])
assert e.term() == 0

tiers = h.decode_events(h.read_topic(svc.bootstrap, "tier-changes"), "tier_change.avsc")
per_customer = collections.defaultdict(list)
for ev, _ in tiers.values():
    per_customer[ev["customer_id"]].append(ev)
review_month = "%04d-%02d" % ((cur - 1) // 12, (cur - 1) % 12 + 1)
for cust in customers:
    evs = sorted(per_customer[cust], key=lambda ev: ev["sequence"])
    got = [(ev["sequence"], ev["reason"], ev["previous_tier"], ev["new_tier"], ev["review_month"])
           for ev in evs]
    assert got[0][:4] == (1, "NEW_CUSTOMER", None, 2), (cust, got)
    assert got[1:] == [(2, "INITIAL_EVALUATION", 2, 4, review_month)], (cust, got)
for p in parts:
    assert svc.redis.hget("tierd:{orders.%d}:meta" % p, "reviewed").decode() == want_reviewed
h.log("after kill -9 inside the review of %s: each of %d customers evaluated exactly once"
      % (review_month, len(customers)))
h.log("PASS")
