#!/usr/bin/python3
"""An outbox entry that can never be published holds back its own
partition only (docs/operations.md, "Outages").

While tierd's publisher is held (fault injection), a malformed entry (a
hand-written one: its second field name is not "k") is put at the head of
partition P's outbox, then 40 new customers of partition Q are placed one
order at a time, so that Q's outbox holds 40 entries (one a transaction),
and one new customer of P, whose event waits behind the bad entry.

Released, the publisher must publish all of Q's within 12 s: a round reads
4 entries of each partition, and when a failing round held back every
partition (200 ms doubling to 5 s) Q's took about 26 s.  P's entries stay,
the bad one named in a warning; deleted by hand, P's event goes out.
"""
import os

import harness as h

svc = h.Services("poison")
tz = "Asia/Shanghai"
now = h.now_ms()
stall = os.path.join(svc.dir, "stall-publish")
names = ["OP-%03d" % i for i in range(400)]
P = h.partition_of(names[0])
Q = (P + 1) % 8
in_q = [c for c in names if h.partition_of(c) == Q][:40]
in_p = [c for c in names if h.partition_of(c) == P][1]
assert len(in_q) == 40
okey = "tierd:{orders.%d}:outbox"


def sale(c):
    o = h.order("%s-1" % c, c, now - 60_000, "SALE",
                [{"sku": "S-1", "quantity": 1, "unit_price": 100}])
    return h.Rec(h.partition_of(c), c.encode(), h.encode(o), o)


def applied_through(part, off):
    return lambda: int(svc.redis.hget("tierd:{orders.%d}:meta" % part, "offset") or 0) >= off


d = h.Daemon(svc, "poison", time_zone=tz, env={"TIERD_FAULT_PUBLISH_STALL_FILE": stall})
open(stall, "w").close()
d.start()
d.http_port()
bad = svc.redis.xadd(okey % P, {"t": "tier-changes", "x": "OP", "i": "bad", "v": "x"})
for n, c in enumerate(in_q, 1):  # one transaction each: one outbox entry each
    h.produce(svc.bootstrap, "orders", [sale(c)])
    h.wait_for(applied_through(Q, n), "order %d of partition %d" % (n, Q), daemons=[d])
h.produce(svc.bootstrap, "orders", [sale(in_p)])
h.wait_for(applied_through(P, 1), "partition %d's order" % P, daemons=[d])
assert svc.redis.xlen(okey % Q) == 40 and svc.redis.xlen(okey % P) == 2
h.log("held: 40 entries in partition %d's outbox, the bad entry and one event in %d's" % (Q, P))

os.unlink(stall)
h.wait_for(lambda: svc.redis.xlen(okey % Q) == 0, "partition %d's outbox to drain" % Q,
           timeout=12, daemons=[d])
tiers = h.decode_events(h.read_topic(svc.bootstrap, "tier-changes"), "tier_change.avsc")
placed = {ev["customer_id"] for ev, _ in tiers.values()}
assert set(in_q) <= placed, sorted(set(in_q) - placed)
assert in_p not in placed, "published past the bad entry"
assert [e[0] for e in svc.redis.xrange(okey % P)][0] == bad
h.wait_for(lambda: "outbox entry %s is malformed" % bad.decode() in d.log_text(),
           "the warning naming the bad entry", daemons=[d])
h.log("partition %d's 40 entries published; %d's wait behind the bad entry, named" % (Q, P))

svc.redis.xdel(okey % P, bad)
h.wait_for(lambda: svc.redis.xlen(okey % P) == 0, "partition %d's outbox" % P, daemons=[d])
tiers = h.decode_events(h.read_topic(svc.bootstrap, "tier-changes"), "tier_change.avsc")
assert in_p in {ev["customer_id"] for ev, _ in tiers.values()}
assert d.term() == 0
h.log("the bad entry deleted by hand: partition %d's event published" % P)
h.log("PASS")
