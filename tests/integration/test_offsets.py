#!/usr/bin/python3
"""Offsets outside the topic: nothing is skipped without a word.

Orders of customers of partitions 0-5 are applied (partitions 6 and 7 get
none), and tierd stops.  Then:

Deleted before read.  More orders go to partitions 0 and 1, and the
broker deletes partition 0's first DELETED of them (Kafka's DeleteRecords,
as retention does) before tierd runs again.  tierd reads on after them:
the log says which offsets, tierd_deleted_unread_total{input="orders"}
counts them, and the aggregates equal the recomputation of every order
but the deleted ones.  Partition 4's new orders and partition 5's new
profiles are all deleted: Redis' offsets move past them though no record
comes after them.  So for 4 profiles of partition 2 deleted
before read (tierd_deleted_unread_total{input="profiles"}), the two
after them joined.  Again under the eager `range` protocol, with
partition 1's records deleted and orders for partitions 1-5, one of
partition 3's coming as an out-of-range error though the broker holds it
(a test build's hook): tierd reads it again 500 ms later, and every order
but the deleted ones counts once.

Made again.  With tierd running, the orders topic is deleted and made
again, with customer-profiles, and new orders go to every partition.
Partitions 6 and 7 (no orders state) are read from their start and
applied, while partition 6's profiles wait past the new profiles topic's
end; partitions 0-5, where
tierd holds offsets past the new topic's end, wait: their state, offset
and outbox do not change, the log names each with the fix, and
tierd_partitions_past_end{input="orders"} is 6.  Repairs, tierd stopped:
`tierctl seek --partition 0 --beginning` keeps partition 0's state and
adds the new topic's orders to it; `tierctl rebuild --partition 1`
rebuilds partition 1 from what the new topic holds; `tierctl seek
--partition 6 --beginning --profiles` has partition 6 join the new
profiles.  A new tierd applies
both, and partitions 2-5 still wait.
"""
import datetime as dt
import io
import os
import random
import subprocess

import avro.io
import avro.schema

import harness as h

TZ = "Asia/Shanghai"
DELETED = 8
TAIL = 5
TIERCTL = h.tierctl_binary()
DELETE_RECORDS = os.environ.get("TIERD_DELETE_RECORDS_BIN") or os.path.join(
    os.path.dirname(h.tierd_binary()), "tests", "integration", "delete_records")

rnd = random.Random(2611)
now = h.now_ms()
cur = h.month_index(now, TZ)
t0 = h.month_start_ms(cur, TZ)
t1 = max(t0 + 600_000, now - 60_000)


def customers_of(part, n, tag):
    out, i = [], 0
    while len(out) < n:
        c = "OF%s-%05d" % (tag, i)
        if h.partition_of(c) == part:
            out.append(c)
        i += 1
    return out


CUST = {p: customers_of(p, 12, "%d" % p) for p in range(8)}


def sale(oid, cust):
    t = rnd.randint(t0, t1)
    lines = [{"sku": "SKU-%d" % rnd.randrange(9), "quantity": rnd.randint(1, 20),
              "unit_price": rnd.randint(100, 9000)}]
    o = h.order(oid, cust, t, "SALE", lines)
    return h.Rec(h.partition_of(cust), cust.encode(), h.encode(o), o)


PROFILE = avro.schema.parse(open(os.path.join(h.ROOT, "schemas", "customer_profile.avsc")).read())


def profile(cust, grade, at_ms):
    v = {"customer_id": cust, "format": "MALL", "market": "URBAN", "chain": False,
         "compliance_grade": grade, "cooperation": 0.6, "growth": 0.6, "tier_override": None,
         "updated_at": dt.datetime.fromtimestamp(at_ms / 1000, dt.timezone.utc)}
    buf = io.BytesIO()
    avro.io.DatumWriter(PROFILE).write(v, avro.io.BinaryEncoder(buf))
    return h.Rec(h.partition_of(cust), cust.encode(), buf.getvalue())


def stored_profiles(p=2):
    return svc.redis.hgetall("tierd:{orders.%d}:p" % p)


def orders(parts, per_part, tag):
    return [sale("%s-%d-%d" % (tag, p, i), rnd.choice(CUST[p]))
            for i in range(per_part) for p in parts]


def offsets():
    return {p: int(svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset") or -1)
            for p in range(8)}


def state_of(parts):
    return {k: v for k, v in h.read_state(svc.redis).items() if k[0] in parts}


def want_of(recs, parts):
    want, dead = h.model(recs, tz=TZ)
    assert not dead, dead
    return {k: v for k, v in want.items() if k[0] in parts}


def tierctl(cfg, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
    p = subprocess.run([TIERCTL, "-c", cfg, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert p.returncode == 0, "tierctl %s: exit %d\n%s\n%s" % (
        " ".join(args), p.returncode, p.stdout, p.stderr)
    return p.stdout


svc = h.Services("offsets")

# --- state in partitions 0-5 ------------------------------------------------
first = orders(range(6), 15, "A")
h.produce(svc.bootstrap, "orders", first)
h.produce(svc.bootstrap, "customer-profiles", [profile(c, "A", now) for c in CUST[2][:5]])
h.produce(svc.bootstrap, "customer-profiles", [profile(c, "A", now) for c in CUST[6][:3]])
h.produce(svc.bootstrap, "customer-profiles", [profile(CUST[5][0], "A", now)])
d = h.Daemon(svc, "offsets-1", time_zone=TZ).start()
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
h.wait_for(lambda: len(stored_profiles()) == 5 and len(stored_profiles(6)) == 3,
           "the first profiles", daemons=[d])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the first events", daemons=[d])
assert d.term() == 0
held = offsets()
assert all(held[p] == 15 for p in range(6)) and held[6] == held[7] == -1, held
assert int(svc.redis.hget("tierd:{orders.2}:meta", "poffset")) == 5
assert int(svc.redis.hget("tierd:{orders.5}:meta", "poffset")) == 1
profiles_before = stored_profiles()

# --- deleted before read ----------------------------------------------------
second = orders((0, 1), 20, "B")
h.produce(svc.bootstrap, "orders", second)
cut = held[0] + DELETED
out = subprocess.run([DELETE_RECORDS, svc.bootstrap, "orders", "0", str(cut)], check=True,
                     stdout=subprocess.PIPE, text=True).stdout
h.log("delete_records: %s" % out.strip())
gone = [r for r in second if r.partition == 0 and r.offset < cut]
assert len(gone) == DELETED
# Partition 4's new orders are all deleted: nothing comes after them to
# move the stored offset past them.
tail = orders((4,), TAIL, "T")
h.produce(svc.bootstrap, "orders", tail)
subprocess.run([DELETE_RECORDS, svc.bootstrap, "orders", "4", str(held[4] + TAIL)], check=True,
               stdout=subprocess.DEVNULL)
gone += tail
# And 4 of 6 newer profiles of partition 2 (offsets 5-8 of 5-10): a
# compacted topic takes DeleteRecords only with deletion in its policy.
h.set_topic_config(svc.bootstrap, {"customer-profiles": {"cleanup.policy": "compact,delete"}})
h.produce(svc.bootstrap, "customer-profiles", [profile(c, "B", now + 1000) for c in CUST[2][:6]])
subprocess.run([DELETE_RECORDS, svc.bootstrap, "customer-profiles", "2", "9"], check=True,
               stdout=subprocess.DEVNULL)
# And both new profiles of partition 5, the last records of its partition.
h.produce(svc.bootstrap, "customer-profiles", [profile(c, "B", now + 1000) for c in CUST[5][:2]])
subprocess.run([DELETE_RECORDS, svc.bootstrap, "customer-profiles", "5", "3"], check=True,
               stdout=subprocess.DEVNULL)

d = h.Daemon(svc, "offsets-2", time_zone=TZ).start()
port = d.http_port()
ends = h.end_offsets(svc.bootstrap, "orders")
# (Within the test's time: a partition that never drains fails it cleanly.)
h.wait_drained(svc, ends, timeout=120, daemons=[d])
line = "orders [0]: offsets %d..%d were deleted by the broker (retention) before tierd read " \
       "them: up to %d orders lost; reading on from offset %d" % (held[0], cut - 1, DELETED, cut)
h.wait_for(lambda: line in d.log_text(), "tierd to say which orders were deleted", daemons=[d])
h.wait_for(lambda: h.metric(port, 'tierd_deleted_unread_total{input="orders"}') == DELETED + TAIL,
           "/metrics to count the deleted orders", daemons=[d])
# wait_drained saw Redis hold partition 4 at the topic's end, though no
# record after the deleted ones moved it there; and the lag says 0.
assert "orders [4]: offsets %d..%d were deleted" % (held[4], held[4] + TAIL - 1) in d.log_text()
h.wait_for(lambda: h.metric(port, 'tierd_consumer_lag{partition="4"}') == 0,
           "partition 4's lag to be 0", daemons=[d])
kept = [r for r in first + second if r not in gone]
h.compare_state(h.read_state(svc.redis), want_of(kept, range(8)))
h.log("deleted before read: %d orders lost, said and counted; the rest applied once" % DELETED)
line = "customer-profiles [2]: offsets 5..8 were deleted by the broker (retention) before " \
       "tierd read them: up to 4 profiles lost; reading on from offset 9"
h.wait_for(lambda: line in d.log_text(), "tierd to say which profiles were deleted", daemons=[d])
h.wait_for(lambda: h.metric(port, 'tierd_deleted_unread_total{input="profiles"}') == 4 + 2,
           "/metrics to count the deleted profiles", daemons=[d])
h.wait_for(lambda: int(svc.redis.hget("tierd:{orders.2}:meta", "poffset")) == 11,
           "the profiles after the deleted ones", daemons=[d])
h.wait_for(lambda: int(svc.redis.hget("tierd:{orders.5}:meta", "poffset")) == 3,
           "partition 5's profiles offset to move past its deleted last ones", daemons=[d])
assert not svc.redis.hexists("tierd:{orders.5}:meta", "prev_pfp")
now_profiles = stored_profiles()
deleted_for = [c.encode() for c in CUST[2][:4]]
assert all(now_profiles[c] == profiles_before[c] for c in deleted_for), "a deleted profile applied"
assert now_profiles[CUST[2][4].encode()] != profiles_before[CUST[2][4].encode()]
assert CUST[2][5].encode() in now_profiles
h.log("and 4 profiles deleted before read: said and counted; the 2 after them joined")

# The same under an eager protocol, where tierd assigns the whole
# assignment again: partitions 2-5 go on from where they were.
assert d.term() == 0
held = offsets()
more = orders(range(1, 6), 10, "E")
h.produce(svc.bootstrap, "orders", more)
cut = held[1] + DELETED
subprocess.run([DELETE_RECORDS, svc.bootstrap, "orders", "1", str(cut)], check=True,
               stdout=subprocess.DEVNULL)
gone += [r for r in more if r.partition == 1 and r.offset < cut]
# And partition 3's fifth new record comes as an out-of-range error though
# the broker holds it (test builds' hook: a broker cannot be made to say
# so): tierd reads it again half a second later, and applies it once.
glitch = held[3] + 4
glitch_file = os.path.join(svc.dir, "out-of-range")
with open(glitch_file, "w") as f:
    f.write("3 %d\n" % glitch)
d = h.Daemon(svc, "offsets-eager", time_zone=TZ,
             kafka_extra={"partition.assignment.strategy": "range"},
             env={"TIERD_FAULT_OUT_OF_RANGE_FILE": glitch_file}).start()
port = d.http_port()
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
deleted1 = "orders [1]: offsets %d..%d were deleted" % (held[1], cut - 1)
line = deleted1
h.wait_for(lambda: line in d.log_text(), "tierd to say which orders were deleted", daemons=[d])
line = "orders [3]: offset %d was out of range for a moment (the partition holds 0..%d); " \
       "reading from it again in 500 ms" % (glitch, held[3] + 9)
assert line in d.log_text(), d.log_text()[-3000:]
assert h.metric(port, 'tierd_partitions_past_end{input="orders"}') == 0
# Reading 1 and 3 again assigned every partition anew: the others went on
# at their positions, not back at Kafka's committed offsets (whose records
# tierd would have received again, and skipped).
applied = len([r for r in more if r not in gone])
h.wait_for(lambda: h.metric(port, "tierd_orders_applied_total") == applied,
           "/metrics to count the %d orders applied" % applied, daemons=[d])
assert h.metric(port, "tierd_redelivered_total") == 0
h.wait_for(lambda: h.metric(port, 'tierd_deleted_unread_total{input="orders"}') == DELETED,
           "/metrics to count the deleted orders", daemons=[d])
kept = [r for r in first + second + more if r not in gone]
h.compare_state(h.read_state(svc.redis), want_of(kept, range(8)))
h.log("the same under the eager range protocol: the other partitions went on where they were; "
      "partition 3's record that came as out of range was read again and applied once")

# --- made again ---------------------------------------------------------------
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the events", daemons=[d])
before = offsets()
state_before = h.read_state(svc.redis)
profiles6 = stored_profiles(6)
h.make_again(svc, "orders", "customer-profiles", daemons=[d])
third = orders(range(8), 6, "C")
h.produce(svc.bootstrap, "orders", third)
assert all(r.offset < 6 for r in third)
# Partition 6 held profiles up to offset 3: the new topic's two are below.
h.produce(svc.bootstrap, "customer-profiles", [profile(c, "C", now + 2000) for c in CUST[6][:2]])

h.wait_for(lambda: all(offsets()[p] == 6 for p in (6, 7)),
           "partitions 6 and 7 to read the new topic", daemons=[d])
h.wait_for(lambda: h.metric(port, 'tierd_partitions_past_end{input="orders"}') == 6,
           "six partitions to wait past the topic's end", daemons=[d])
# Partition 2's profiles wait too: past the end, or paused with its
# orders, whichever librdkafka says first.
h.wait_for(lambda: h.metric(port, 'tierd_partitions_past_end{input="profiles"}') >= 1,
           "partition 6 to wait past the profiles topic's end", daemons=[d])
said = "customer-profiles [6]: tierd holds this partition as read up to offset 3, but the " \
       "topic ends at "
assert said in d.log_text(), d.log_text()[-3000:]
assert "partition 6 waits: the offset tierd holds lies past the profiles topic's end" in \
    h.http_get(port, "/readyz")[1]
for p in range(6):
    # The end it names is 0 or 6: librdkafka may try before the orders come.
    said = "orders [%d]: tierd holds this partition as read up to offset %d, but the topic " \
           "ends at " % (p, before[p])
    assert said in d.log_text(), "no line names partition %d:\n%s" % (p, d.log_text()[-3000:])
assert "An input topic made again" in d.log_text()
ready = h.http_get(port, "/readyz")
assert ready[0] == 200, ready  # partitions 6 and 7 are applied
for p in range(6):
    assert "partition %d waits: the offset tierd holds lies past the orders topic's end" % p \
        in ready[1], ready
after = offsets()
assert all(after[p] == before[p] for p in range(6)), (before, after)
assert state_of(range(6)) == {k: v for k, v in state_before.items() if k[0] < 6}
h.compare_state(state_of((6, 7)), want_of(third, (6, 7)))
assert stored_profiles(6) == profiles6, "partition 6 joined profiles below its offset"
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "partitions 6 and 7's events", daemons=[d])
assert d.alive()
h.log("made again: partitions 0-5 wait at their offsets, unchanged; 6 and 7 applied")

# --- the repairs --------------------------------------------------------------
# Partition 1's deleted orders were said and counted once by this tierd,
# though partition 3's reading again assigned it anew after its own
# (which sent it back into the deleted range before).
assert h.metric(port, 'tierd_deleted_unread_total{input="orders"}') == DELETED
assert d.term() == 0
assert d.log_text().count(deleted1) == 1, d.log_text()[-3000:]
out = tierctl(d.cfg, "seek", "--partition", "0", "--beginning")
h.log("tierctl: %s" % out.strip())
assert "orders [0]: offset %d -> 0" % before[0] in out, out
out = tierctl(d.cfg, "rebuild", "--partition", "1")
h.log("tierctl: %s" % out.strip())
out = tierctl(d.cfg, "seek", "--partition", "6", "--beginning", "--profiles")
h.log("tierctl: %s" % out.strip())
assert "customer-profiles [6]: offset 3 -> 0" in out, out
assert offsets()[0] == 0 and offsets()[1] == 6

d = h.Daemon(svc, "offsets-3", time_zone=TZ).start()
port = d.http_port()
h.wait_for(lambda: offsets()[0] == 6, "partition 0 to read the new topic", daemons=[d])
h.wait_for(lambda: h.metric(port, 'tierd_partitions_past_end{input="orders"}') == 4,
           "partitions 2-5 to wait still", daemons=[d])
h.wait_for(lambda: int(svc.redis.hget("tierd:{orders.6}:meta", "poffset")) == 2,
           "partition 6 to join the new profiles", daemons=[d])
assert all(stored_profiles(6)[c.encode()] != profiles6[c.encode()] for c in CUST[6][:2])
h.compare_state(state_of((0,)), want_of(kept + third, (0,)))
h.compare_state(state_of((1,)), want_of(third, (1,)))
h.compare_state(state_of((6, 7)), want_of(third, (6, 7)))
assert state_of(range(2, 6)) == {k: v for k, v in state_before.items() if 2 <= k[0] < 6}
assert d.term() == 0
h.log("seek kept partition 0's state and added the new orders; rebuild made partition 1 anew")

# --- made again while tierd is stopped, and grown past its offsets ---------------
# Profiles first: partition 6's new topic holds 4 records where tierd had
# joined 2, so no offset is out of range; only the record before poffset,
# not the one joined there, tells.  Its orders go on.
profiles6 = stored_profiles(6)
assert int(svc.redis.hget("tierd:{orders.6}:meta", "poffset")) == 2
h.make_again(svc, "customer-profiles")
h.produce(svc.bootstrap, "customer-profiles", [profile(c, "D", now + 3000) for c in CUST[6][:4]])
sixth = orders((6,), 3, "F")
h.produce(svc.bootstrap, "orders", sixth)
d = h.Daemon(svc, "offsets-4", time_zone=TZ).start()
port = d.http_port()
said = "customer-profiles [6]: the record at offset 1 is not the one tierd applied there"
h.wait_for(lambda: said in d.log_text(), "tierd to tell partition 6's profiles topic from the old",
           daemons=[d])
h.wait_for(lambda: offsets()[6] == 9, "partition 6's orders to go on", daemons=[d])
said = "partition 6 waits: the profiles topic's record before the offset tierd holds is not " \
    "the one it applied there"
h.wait_for(lambda: said in h.http_get(port, "/readyz")[1], "/readyz to say why partition 6 waits",
           daemons=[d])
assert stored_profiles(6) == profiles6
assert int(svc.redis.hget("tierd:{orders.6}:meta", "poffset")) == 2
h.compare_state(state_of((6,)), want_of(third + sixth, (6,)))
assert d.term() == 0
h.log("profiles made again while stopped: partition 6's wait, its orders went on")

# Then orders: partition 7's new topic holds 12 records where tierd had
# read 6.
held = offsets()
state_before = h.read_state(svc.redis)
h.make_again(svc, "orders")
fourth = orders((7,), 12, "D")
h.produce(svc.bootstrap, "orders", fourth)
assert held[7] == 6 and max(r.offset for r in fourth) == 11
d = h.Daemon(svc, "offsets-5", time_zone=TZ).start()
port = d.http_port()
said = "orders [7]: the record at offset 5 is not the one tierd applied there"
h.wait_for(lambda: said in d.log_text(), "tierd to tell partition 7's topic from the old",
           daemons=[d])
h.wait_for(lambda: h.metric(port, 'tierd_partitions_past_end{input="orders"}') == 8,
           "every partition to wait", daemons=[d])
for p in range(7):  # the others asked past the new end: the offset they hold is named
    assert "orders [%d]: tierd holds this partition as read up to offset %d, but" % (p, held[p]) \
        in d.log_text(), d.log_text()[-3000:]
ready = h.http_get(port, "/readyz")[1]
assert "partition 7 waits: the orders topic's record before the offset tierd holds is not the " \
    "one it applied there" in ready, ready
assert "partition 0 waits: the offset tierd holds lies past the orders topic's end" in ready, ready
assert offsets() == held
assert h.read_state(svc.redis) == state_before
assert d.term() == 0
h.log("orders made again while stopped: partition 7, grown past its offset, waits like the rest")
h.log("PASS")
