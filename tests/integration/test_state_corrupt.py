#!/usr/bin/python3
"""A customer state that does not decode stops its partition, and only it.

200 customers order over last month and this one (Asia/Shanghai); tierd
applies them.  Then one customer's value in `tierd:{orders.P}:c` (the
victim) is overwritten with garbage, and more orders come: in partition P
the victim's first (95 units of its tier's cap of 100 this month: it would
fire a WARNING), then orders of other customers of P and of a customer new
to P; in every other partition orders of known and of new customers.

While the state is broken:
  - every other partition is drained and its events published;
  - P's stored offset stays at the victim's order, and nothing of P
    changes: its states (but the victim's garbage, which stays as it was),
    profiles, outbox and meta;
  - nothing is published for the victim, nor for P's new customer;
  - /metrics counts tierd_state_corrupt_total >= 1, and the log names the
    key and the customer.
Then tierd is stopped with SIGTERM (exit 0, leases released), `tierctl
rebuild --partition P` rebuilds P from the topic, and a new tierd drains
it: the aggregates of every partition, the victim's included, equal
harness.model's recomputation (through tierctl dump), and P's
meta is format 4 with no review cursor.

Then another partition Q's meta gets month 202613 (no such month; read
leniently it would be January of the next year) and a new tierd takes more
orders: Q stops (nothing of it changes, its offset stays), the log names
the key, the field and `tierctl rebuild`, /metrics counts it, the other
partitions drain, and `tierctl dump --partition Q` prints only an error
line (exit 1).  After `tierctl rebuild --partition Q` every aggregate
equals the recomputation again.

Last, partition R's meta offset becomes "7x" before a tierd starts: R
holds, named, with the field untouched; put right by hand while tierd
waits, R is taken up at the next retry from the stored offset, with no
record redelivered or deduplicated, and the aggregates are exact.
Meanwhile partition S's epoch becomes "7x" under that running tierd: its
lease renewal holds S, named and counted (not taken for lost writes), new
orders of S stay unapplied, and after `tierctl rebuild --partition S`
(which replaces the epoch) a new tierd applies them once.  Then partition
T's meta is deleted while tierd is stopped: a new tierd holds T, named
and counted, its states untouched (it must not read T from the topic's
start as a partition nobody wrote); `tierctl rebuild` restores it.
"""
import os
import random
import subprocess

import harness as h

TZ = "Asia/Shanghai"
TIERCTL = os.environ.get("TIERCTL_BIN") or os.path.join(
    os.path.dirname(h.tierd_binary()), "tierctl")
GARBAGE = b"\x03\x01\x02 this is not a customer state \xff\xfe\x00\x01"
META_FIELDS = (b"offset", b"month", b"reviewed", b"poffset", b"format", b"rv_month", b"rv_after")

rnd = random.Random(4711)
now = h.now_ms()
cur = h.month_index(now, TZ)
t_cur0 = h.month_start_ms(cur, TZ)
# This month's orders go between its start and a minute ago (within the
# FUTURE rule's day of skew if the month has only just begun).
t_cur1 = max(t_cur0 + 600_000, now - 60_000)
customers = ["SC%03d" % i for i in range(200)]
victim = customers[0]
P = h.partition_of(victim)
in_p = [c for c in customers if h.partition_of(c) == P and c != victim]


def new_customer(part, tag):
    for i in range(1000):
        c = "SCN-%s-%03d" % (tag, i)
        if h.partition_of(c) == part:
            return c
    raise AssertionError("no id hashes to partition %d" % part)


def sale(oid, cust, t, qty):
    lines = [{"sku": "SKU-%d" % rnd.randrange(12), "quantity": qty, "unit_price": rnd.randint(100, 9000)}]
    o = h.order(oid, cust, t, "SALE", lines)
    return h.Rec(h.partition_of(cust), cust.encode(), h.encode(o), o)


def first_orders():
    """Last month 1-2 orders each; this month 1-2 more, the victim exactly
    50 units (tier 2, cap 100: below the warning's 90)."""
    out = []
    for c in customers:
        for k in range(rnd.randint(1, 2)):
            t = rnd.randint(h.month_start_ms(cur - 1, TZ), t_cur0 - 3600_000)
            out.append((t, sale("%s-a%d" % (c, k), c, t, rnd.randint(1, 30))))
        if c == victim:
            qs = [20, 30]
        else:
            qs = [rnd.randint(1, 40) for _ in range(rnd.randint(1, 2))]
        for k, q in enumerate(qs):
            t = rnd.randint(t_cur0, (t_cur0 + t_cur1) // 2)
            out.append((t, sale("%s-b%d" % (c, k), c, t, q)))
    out.sort(key=lambda x: x[0])
    return [r for _t, r in out]


def second_orders():
    """P: the victim's order first (50 + 45 = 95 units), then other
    customers of P, a customer new to P and the victim again.  Elsewhere:
    50 known customers and one new customer per partition."""
    t = (t_cur0 + t_cur1) // 2 + 1000
    out = [sale("%s-c0" % victim, victim, t, 45)]
    for c in rnd.sample(in_p, 4):
        out.append(sale("%s-c0" % c, c, t + 1000, rnd.randint(1, 10)))
    out.append(sale("NEWP-1", new_customer(P, "p"), t + 2000, 7))
    out.append(sale("%s-c1" % victim, victim, t + 3000, 3))
    others = [c for c in customers if h.partition_of(c) != P]
    for c in rnd.sample(others, 50):
        out.append(sale("%s-c0" % c, c, t + 1000, rnd.randint(1, 10)))
    for part in range(8):
        if part != P:
            out.append(sale("NEW-%d" % part, new_customer(part, "o%d" % part), t + 2000, 5))
    return out



def partition_snapshot_of(r, part):
    """What tierd keeps of a partition."""
    k = "tierd:{orders.%d}:" % part
    return {"states": r.hgetall(k + "c"), "profiles": r.hgetall(k + "p"),
            "outbox": r.xrange(k + "outbox"),
            "meta": dict(zip(META_FIELDS, r.hmget(k + "meta", *META_FIELDS)))}


def partition_snapshot(r):
    """What tierd keeps of partition P, the victim's value apart."""
    snap = partition_snapshot_of(r, P)
    snap["victim"] = snap["states"].pop(victim.encode(), None)
    return snap


def offsets(r):
    return {p: int(r.hget("tierd:{orders.%d}:meta" % p, "offset") or 0) for p in range(8)}


def events_by_customer():
    """{customer: set of event ids} on tier-changes and quota-events."""
    out = {}
    for topic, schema in (("tier-changes", "tier_change.avsc"), ("quota-events", "quota_event.avsc")):
        for eid, (ev, _v) in h.decode_events(h.read_topic(svc.bootstrap, topic), schema).items():
            out.setdefault(ev["customer_id"], set()).add(eid)
    return out


def tierctl(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
    p = subprocess.run([TIERCTL, "-c", d.cfg, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert p.returncode == 0, "tierctl %s: exit %d\n%s\n%s" % (
        " ".join(args), p.returncode, p.stdout, p.stderr)
    return p.stdout


# ------------------------------------------------------------------- run

svc = h.Services("corrupt")
d = h.Daemon(svc, "corrupt-1", time_zone=TZ).start()
port = d.http_port()
first = first_orders()
h.produce(svc.bootstrap, "orders", first)
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the first events to be published", daemons=[d])
events_before = events_by_customer()
assert events_before.get(victim), "the victim was placed: it has a tier change"
assert h.metric(port, "tierd_state_corrupt_total") == 0
h.log("%d orders applied; the victim %s is in partition %d with %d others" % (
    len(first), victim, P, len(in_p)))

# --- the damage ---------------------------------------------------------
ckey = "tierd:{orders.%d}:c" % P
assert svc.redis.hexists(ckey, victim)
svc.redis.hset(ckey, victim, GARBAGE)
before = partition_snapshot(svc.redis)
stored = offsets(svc.redis)
second = second_orders()
h.produce(svc.bootstrap, "orders", second)
ends = h.end_offsets(svc.bootstrap, "orders")
victim_first = min(r.offset for r in second if r.order["customer_id"] == victim)
assert victim_first == stored[P], "the victim's order is the first new record of P"
assert ends[P] > victim_first + 1, "P has records after the victim's"

line = "%s field %s: state does not parse" % (ckey, victim)
h.wait_for(lambda: line in d.log_text(), "tierd to name the broken state", daemons=[d])
h.wait_for(lambda: all(o >= ends[p] for p, o in offsets(svc.redis).items() if p != P),
           "the other partitions to drain", daemons=[d])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the other partitions' events", daemons=[d])
h.wait_for(lambda: h.metric(port, "tierd_state_corrupt_total") >= 1,
           "/metrics to count the broken state", daemons=[d])
logged = [l for l in d.log_text().splitlines() if line in l]
h.log("tierd says: %s" % logged[0])
assert "[%d]" % P in logged[0] or "orders.%d" % P in logged[0], logged[0]

events_during = events_by_customer()
new_elsewhere = [r.order["customer_id"] for r in second
                 if r.order["order_id"].startswith("NEW-")]
missing = [c for c in new_elsewhere if not events_during.get(c)]
assert not missing, "the other partitions' new customers were not placed: %s" % missing
assert events_during.get(victim) == events_before[victim], \
    "published for the broken customer: %s" % sorted(events_during[victim] - events_before[victim])
new_p = new_customer(P, "p")
assert not events_during.get(new_p), "published for %s, behind the broken state in P" % new_p
after = partition_snapshot(svc.redis)
assert after["victim"] == GARBAGE, "tierd overwrote the broken value"
for what in ("meta", "states", "profiles", "outbox"):
    assert after[what] == before[what], "partition %d: %s changed while it was broken" % (P, what)
assert offsets(svc.redis)[P] == victim_first
assert d.alive()
h.log("partition %d holds at offset %d (end %d); the other %d partitions drained; "
      "nothing published for %s" % (P, victim_first, ends[P], 7, victim))

# --- the repair -----------------------------------------------------------
assert d.term() == 0, "SIGTERM with a broken partition must still exit 0"
assert svc.redis.hget("tierd:{orders.%d}:meta" % P, "lease") is None, "lease not released"
out = tierctl("rebuild", "--partition", str(P))
h.log("tierctl: %s" % out.strip())
assert "rebuilt orders [%d]" % P in out, out
assert offsets(svc.redis)[P] == victim_first, (
    "the rebuild replays what tierd had applied, and leaves the rest to tierd")

d = h.Daemon(svc, "corrupt-2", time_zone=TZ).start()
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox to drain", daemons=[d])
assert d.term() == 0
want_state, want_dead = h.model(first + second, tz=TZ)
assert not want_dead
h.compare_state(h.read_state(svc.redis), want_state)
m = svc.redis.hgetall("tierd:{orders.%d}:meta" % P)
assert m.get(b"format") == b"4" and b"rv_month" not in m and b"rv_after" not in m, m
vm = [v for (p, _m, c), v in want_state.items() if c == victim and _m == (cur // 12) * 100 + cur % 12 + 1]
h.log("after the rebuild: aggregates equal the recomputation (%d customer-months; "
      "the victim this month %s)" % (len(want_state), vm))

# The records P held back were never applied by tierd: rebuild replays only
# up to the stored offset and leaves them to tierd, which applies them and
# publishes what they decide -- the victim's WARNING (95 of 100 units) and
# the placement of P's new customer.
held_back = ["%s:%04d-%02d:WARNING" % (victim, cur // 12, cur % 12 + 1), "%s:tier:1" % new_p]


def held_back_published():
    published = set().union(*events_by_customer().values())
    return all(e in published for e in held_back)


h.wait_for(held_back_published, "the events of the records P held back to be published")
h.log("events of the records P held back: all published")

# --- a meta field that does not parse -------------------------------------
# Partition Q's meta says month 202613 (a hand edit: there is no 13th
# month; read leniently it was January of the next year).  Q must stop as a
# broken state does, and only Q; the rebuild repairs it.
def break_meta(part, field, value, tag, name):
    """Sets partition part's meta field to value, then a new tierd (name)
    takes an order of every customer (order ids tagged): returns once it
    has named the field and drained every other partition, with (tierd,
    its port, the orders, the topic's ends, the field's good value, part's
    snapshot and stored offset before)."""
    meta = "tierd:{orders.%d}:meta" % part
    good = svc.redis.hget(meta, field)
    stored = svc.redis.hget(meta, "offset")
    svc.redis.hset(meta, field, value)
    snap = partition_snapshot_of(svc.redis, part)
    t = (t_cur0 + t_cur1) // 2 + 5000 + 4000 * len(tag)
    more = [sale("%s-%s%d" % (c, tag, k), c, t + k, rnd.randint(1, 10))
            for k, c in enumerate(customers)]
    assert any(h.partition_of(c) == part for c in customers)
    dm = h.Daemon(svc, name, time_zone=TZ).start()
    h.produce(svc.bootstrap, "orders", more)
    ends = h.end_offsets(svc.bootstrap, "orders")
    line = '%s field %s "%s" does not parse' % (meta, field, value)
    h.wait_for(lambda: line in dm.log_text(), "tierd to name %s" % line, daemons=[dm])
    h.wait_for(lambda: all(int(svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset")) >= ends[p]
                           for p in range(8) if p != part),
               "the partitions but %d to drain" % part, daemons=[dm])
    return dm, dm.http_port(), more, ends, good, snap, int(stored)


Q = (P + 1) % 8
qmeta = "tierd:{orders.%d}:meta" % Q
d, port, third, ends, good_month, q_before, q_stored = break_meta(Q, "month", "202613", "d",
                                                                  "corrupt-3")
line = '%s field month "202613" does not parse' % qmeta
h.wait_for(lambda: h.metric(port, "tierd_state_corrupt_total") >= 1,
           "/metrics to count Q's meta", daemons=[d])
assert "tierctl rebuild --partition %d" % Q in [l for l in d.log_text().splitlines()
                                                 if line in l][0]
assert partition_snapshot_of(svc.redis, Q) == q_before, "partition %d changed while broken" % Q
assert offsets(svc.redis)[Q] == q_stored < ends[Q]
dumped = h.dump(svc.redis, "--partition", str(Q), rc=1, stderr_has="meta field month")
assert [o["type"] for o in dumped] == ["error"] and "rebuild" in dumped[0]["error"], dumped
assert d.term() == 0
out = tierctl("rebuild", "--partition", str(Q))
assert "rebuilt orders [%d]" % Q in out, out
assert svc.redis.hget(qmeta, "month") == good_month, "the rebuild left month %r" % (
    svc.redis.hget(qmeta, "month"),)
d = h.Daemon(svc, "corrupt-4", time_zone=TZ).start()
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
d.http_port()  # the rebuild left nothing to drain: up before it is stopped
assert d.term() == 0
want_state, want_dead = h.model(first + second + third, tz=TZ)
h.compare_state(h.read_state(svc.redis), want_state)
h.log("partition %d's meta month 202613: refused, the rest drained, rebuilt, equal again" % Q)

# --- an offset that does not parse, put right while tierd waits ----------
# Read as a number, "7x" would be 7: the partition read again from there.
# tierd must hold R without reading it as anything; once the field is
# right again, its next retry (within a minute) claims R again and reads
# from that offset: nothing redelivered, nothing deduplicated, exact sums.
R = (P + 2) % 8
rmeta = "tierd:{orders.%d}:meta" % R
d, port, fourth, ends, good_offset, r_before, _ = break_meta(R, "offset", "7x", "ee", "corrupt-5")
assert partition_snapshot_of(svc.redis, R) == r_before, "partition %d changed while broken" % R

# --- an epoch that does not parse, while tierd owns the partition --------
# Partition S is drained and quiet when its epoch becomes "7x" (a hand
# edit).  The lease renewal (every 10 s) must take it for what it is: S
# waits, named, counted -- not "Redis lost writes", which would claim S
# again and read its topic from the start.  Orders for S then stay
# unapplied while R is repaired; after tierd stops, `tierctl rebuild`
# replaces the epoch and a new tierd applies S's orders once.
S = (P + 3) % 8
smeta = "tierd:{orders.%d}:meta" % S
s_offset = int(svc.redis.hget(smeta, "offset"))
svc.redis.hset(smeta, "epoch", "7x")
line = '%s field epoch "7x" does not parse' % smeta
h.wait_for(lambda: line in d.log_text(), "the lease renewal to name S's epoch", daemons=[d])
h.wait_for(lambda: h.metric(port, "tierd_state_corrupt_total") >= 2,
           "/metrics to count S's meta", daemons=[d])
s_customers = [c for c in customers if h.partition_of(c) == S][:5]
fifth = [sale("%s-ff%d" % (c, k), c, (t_cur0 + t_cur1) // 2 + 40000 + k, 3)
         for k, c in enumerate(s_customers)]
h.produce(svc.bootstrap, "orders", fifth)

svc.redis.hset(rmeta, "offset", good_offset)
h.wait_drained(svc, ends, timeout=150, daemons=[d])
assert "its meta parses again" in d.log_text()
for name in ("tierd_redelivered_total", "tierd_duplicates_ignored_total"):
    assert h.metric(port, name) == 0, "%s %s after R's repair" % (name, h.metric(port, name))
s_lines = [l for l in d.log_text().splitlines() if "[%d]" % S in l]
assert not [l for l in s_lines if "lost writes" in l or "re-claimed" in l], s_lines
assert int(svc.redis.hget(smeta, "offset")) == s_offset, "partition %d applied orders while broken" % S
assert d.term() == 0
h.log("partition %d's offset 7x: held, put right by hand, taken up from its offset" % R)

p = subprocess.run([TIERCTL, "-c", d.cfg, "rebuild", "--partition", str(S)], stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True, timeout=120,
                   env={k: v for k, v in os.environ.items() if not k.startswith("TIERD_")})
assert p.returncode == 0 and "rebuilt orders [%d]" % S in p.stdout, (p.returncode, p.stdout, p.stderr)
assert 'field epoch "7x" replaced by' in p.stderr, p.stderr
assert int(svc.redis.hget(smeta, "epoch")) > 1_000_000_000_000, svc.redis.hget(smeta, "epoch")
d = h.Daemon(svc, "corrupt-6", time_zone=TZ).start()
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
assert h.metric(d.http_port(), "tierd_duplicates_ignored_total") == 0
assert d.term() == 0
want_state, want_dead = h.model(first + second + third + fourth + fifth, tz=TZ)
h.compare_state(h.read_state(svc.redis), want_state)
h.log("R's sums exact; partition %d's epoch 7x under a running tierd: held, named, rebuilt, "
      "applied once" % S)

# --- customer states without their meta ------------------------------------
# Partition T's meta is deleted by hand while tierd is stopped.  Read as a
# partition nobody has written, T would be read from the topic's start:
# every order seen again, past months reviewed again.  tierd must hold T
# (named, counted, states untouched) until `tierctl rebuild` restores it.
T = (P + 4) % 8
tmeta, tckey = "tierd:{orders.%d}:meta" % T, "tierd:{orders.%d}:c" % T
t_states = svc.redis.hgetall(tckey)
assert t_states and svc.redis.delete(tmeta) == 1
t_customers = [c for c in customers if h.partition_of(c) == T][:5]
assert t_customers
sixth = [sale("%s-gg%d" % (c, k), c, (t_cur0 + t_cur1) // 2 + 50000 + k, 2)
         for k, c in enumerate(customers)]
d = h.Daemon(svc, "corrupt-7", time_zone=TZ).start()
h.produce(svc.bootstrap, "orders", sixth)
ends = h.end_offsets(svc.bootstrap, "orders")
h.wait_for(lambda: all(int(svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset")) >= ends[p]
                       for p in range(8) if p != T),
           "the partitions but %d to drain" % T, daemons=[d])
assert svc.redis.hgetall(tckey) == t_states, "partition %d's states changed" % T
assert svc.redis.hget(tmeta, "offset") is None
line = "%s holds no offset, yet the partition holds customer states" % tmeta
h.wait_for(lambda: line in d.log_text(), "tierd to name T's missing meta", daemons=[d])
assert "[%d]: customer states but no offset in meta" % T in d.log_text()
h.wait_for(lambda: h.metric(d.http_port(), "tierd_state_corrupt_total") >= 1,
           "/metrics to count T's missing meta", daemons=[d])
assert d.term() == 0
out = tierctl("rebuild", "--partition", str(T))
assert "rebuilt orders [%d]" % T in out, out
# The rebuild replays T to the topic's end, its held orders too.
d = h.Daemon(svc, "corrupt-8", time_zone=TZ).start()
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
d.http_port()  # up (its signal handlers set) before it is stopped
assert d.term() == 0
want_state, want_dead = h.model(first + second + third + fourth + fifth + sixth, tz=TZ)
h.compare_state(h.read_state(svc.redis), want_state)
h.log("partition %d's meta deleted: held with its states untouched, rebuilt, exact" % T)
h.log("PASS")
