#!/usr/bin/python3
"""Input written by a transactional producer: markers are not records.

A transactional producer writes a commit (or abort) marker after each
transaction's records in every partition it wrote; the marker takes an
offset, and no record ever comes for it.  Orders and customer-profiles are
produced that way: several committed transactions, one re-sending an
order id, and one aborted transaction on each topic, the last thing in
every partition.  tierd (read_committed) must:

- apply every committed order once and no aborted one (model equality),
  and join the committed profiles, not the aborted ones;
- move every partition's stored offsets past the markers, so that the
  stored offset and poffset reach the topics' ends and the lag gauge says
  0 on all eight partitions (they stayed one short for good before), and
  the group's committed offsets in Kafka reach the ends too;
- end each partition's profile catch-up at once: the profiles' end is a
  marker, which tierd used to wait 60 s for ("applying orders anyway");
- after a restart, with one more committed transaction, go on from there:
  the new orders applied once, nothing redelivered, nothing skipped; and
  move again past an aborted transaction that comes after that;
- and `tierctl rebuild` of a partition reads the topic to its end, past
  the markers, and rebuilds the committed orders only;
- killed -9 while 30 small transactions stream in (every fifth aborted),
  a new tierd ends with every committed order counted once, no aborted
  one, and the lag 0;
- librdkafka reports no position for a partition sought back until a
  record comes (marker_tick relies on it after a rewind);
- the offsets moved past markers keep the hash of the last record applied
  with its offset: with the topic deleted and made again while tierd is
  stopped, grown past those records, every partition waits and nothing is
  applied (the check had nothing to compare before).
"""
import os
import random
import re
import subprocess
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

import events_model
import harness as h

TZ = "Asia/Shanghai"
rnd = random.Random(2711)
now = h.now_ms()
t0 = h.month_start_ms(h.month_index(now, TZ), TZ)
t1 = max(t0 + 600_000, now - 60_000)
CUST = ["TX%04d" % i for i in range(40)]


def sale(oid, cust):
    lines = [{"sku": "SKU-%d" % rnd.randrange(30), "quantity": rnd.randint(1, 20),
              "unit_price": rnd.randint(100, 9000)} for _ in range(rnd.randint(1, 3))]
    o = h.order(oid, cust, rnd.randint(t0, t1), "SALE", lines)
    return h.Rec(h.partition_of(cust), cust.encode(), h.encode(o), o)


def profile(cust, grade, cooperation):
    value = events_model.profile_value(cust, grade, "MALL", now, cooperation=cooperation)
    return h.Rec(h.partition_of(cust), cust.encode(), value)


def transaction(producer, topic, recs, commit=True):
    producer.begin_transaction()
    for r in recs:
        producer.produce(topic, r.value, r.key, partition=r.partition)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.flush(30)
        producer.abort_transaction(30)


def settled_ends(topic):
    """Each partition's end once every marker is written: the coordinator
    writes them after the commit returns, and until then a read_committed
    reader's end (the last stable offset) lags the log's."""
    ends = {}

    def settled():
        probes = [Consumer({"bootstrap.servers": svc.bootstrap, "group.id": "tierd-test-probe",
                            "isolation.level": level})
                  for level in ("read_committed", "read_uncommitted")]
        try:
            for p in range(8):
                stable, log_end = (c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                                   for c in probes)
                if stable != log_end:
                    return False
                ends[p] = log_end
        finally:
            for c in probes:
                c.close()
        return True

    h.wait_for(settled, "the markers of %s to be written" % topic)
    return dict(ends)


def meta(field):
    return {p: int(svc.redis.hget("tierd:{orders.%d}:meta" % p, field) or -1) for p in range(8)}


svc = h.Services("transactional")
tx = Producer({"bootstrap.servers": svc.bootstrap, "transactional.id": "tierd-test-tx"})
tx.init_transactions(30)

# Profiles: one committed transaction, then an aborted one with other grades.
committed_profiles = [profile(c, "A", 0.7) for c in CUST[:16]]
transaction(tx, "customer-profiles", committed_profiles)
transaction(tx, "customer-profiles", [profile(c, "D", 0.1) for c in CUST[:16]], commit=False)

# Orders: three committed transactions (the third re-sends an order id of
# the first), then an aborted one.
committed = []
for n in range(3):
    recs = [sale("T%d-%d" % (n, i), rnd.choice(CUST)) for i in range(60)]
    if n == 2:
        again = committed[0]
        recs.append(h.Rec(again.partition, again.key, again.value, again.order))
    transaction(tx, "orders", recs)
    committed += recs
aborted = [sale("AB-%d" % i, rnd.choice(CUST)) for i in range(40)]
transaction(tx, "orders", aborted, commit=False)

ends, pends = settled_ends("orders"), settled_ends("customer-profiles")
h.log("ends: orders %s, profiles %s" % (ends, pends))

d = h.Daemon(svc, "transactional-1", time_zone=TZ).start()
port = d.http_port()
# Well within the 60 s a partition waited for its profiles' marker.
h.wait_drained(svc, ends, timeout=40, daemons=[d])
h.wait_for(lambda: all(meta("poffset")[p] == pends[p] for p in range(8) if pends[p] > 0),
           "every poffset to reach the profiles' end %s" % pends, timeout=20, daemons=[d])
assert all(meta("offset")[p] == ends[p] for p in range(8)), (meta("offset"), ends)
assert "applying orders anyway" not in d.log_text(), d.log_text()[-3000:]
h.wait_for(lambda: h.partition_metric(port, "tierd_consumer_lag") == {str(p): "0" for p in range(8)},
           "the lag of all eight partitions to be 0", timeout=20, daemons=[d])
want, dead = h.model(committed, tz=TZ)
assert not dead, dead
h.compare_state(h.read_state(svc.redis), want)


def group_committed():
    c = Consumer({"bootstrap.servers": svc.bootstrap, "group.id": "tierd-test"})
    try:
        got = c.committed([TopicPartition("orders", p) for p in range(8)], timeout=10)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in got}


# Kafka's committed offsets (advisory, for the usual lag tools) follow.
h.wait_for(lambda: group_committed() == ends, "the group's committed offsets to reach the ends",
           timeout=30, daemons=[d])
for r in committed_profiles:
    got = svc.redis.hget("tierd:{orders.%d}:p" % r.partition, r.key)
    assert got is not None and got.split()[3] == b"A" and got.split()[4] == b"0.69999999999999996", \
        (r.key, got)
h.log("committed orders and profiles applied once, aborted ones not; offsets at the ends, "
      "lag 0, no wait for the profiles' marker")

# --- after a restart, one more transaction ---------------------------------
assert d.term() == 0
more = [sale("T3-%d" % i, rnd.choice(CUST)) for i in range(60)]
transaction(tx, "orders", more)
ends = settled_ends("orders")
d = h.Daemon(svc, "transactional-2", time_zone=TZ).start()
port = d.http_port()
h.wait_drained(svc, ends, timeout=40, daemons=[d])
h.wait_for(lambda: h.partition_metric(port, "tierd_consumer_lag") == {str(p): "0" for p in range(8)},
           "the lag of all eight partitions to be 0 again", timeout=20, daemons=[d])
body = h.http_get(port, "/metrics")[1]
assert re.search(r"^tierd_redelivered_total 0$", body, re.M), body
# An aborted transaction after the offsets moved past the last commit
# marker: moved again, past its records and marker.
transaction(tx, "orders", [sale("AB2-%d" % i, rnd.choice(CUST)) for i in range(40)], commit=False)
ends = settled_ends("orders")
h.wait_drained(svc, ends, timeout=40, daemons=[d])
h.wait_for(lambda: h.partition_metric(port, "tierd_consumer_lag") == {str(p): "0" for p in range(8)},
           "the lag to be 0 past the aborted transaction", timeout=20, daemons=[d])
want, dead = h.model(committed + more, tz=TZ)
h.compare_state(h.read_state(svc.redis), want)
assert d.term() == 0
tx.flush(10)
h.log("restarted: the next transaction applied once from the offsets past the markers")

# --- tierctl rebuild reads the same topic -------------------------------------
# It reads up to the end, past the markers at the end (it waited for a record
# at the last offset before), and leaves out the aborted orders.
P = max(range(8), key=lambda p: sum(r.partition == p for r in committed + more))
svc.redis.delete(*svc.redis.keys("tierd:{orders.%d}:*" % P))
env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
out = subprocess.run([h.tierctl_binary(), "-c", d.cfg, "rebuild", "--partition", str(P)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                     timeout=120)
assert out.returncode == 0, (out.stdout, out.stderr)
assert "rebuilt orders [%d]" % P in out.stdout, out.stdout
got = {k: v for k, v in h.read_state(svc.redis).items() if k[0] == P}
h.compare_state(got, {k: v for k, v in want.items() if k[0] == P})
h.log("tierctl rebuild of partition %d: the committed orders only; %s" % (P, out.stdout.strip()))

# --- killed -9 among many small transactions ---------------------------------
# Batches and moves past markers interleave; a crash anywhere among them
# loses nothing and doubles nothing.
stream_committed = []


def produce_stream():
    for n in range(30):
        recs = [sale("S%d-%d" % (n, i), rnd.choice(CUST)) for i in range(40)]
        commit = n % 5 != 4
        transaction(tx, "orders", recs, commit=commit)
        if commit:
            stream_committed.extend(recs)
        time.sleep(0.05)  # pacing the producer, not waiting on anything


d = h.Daemon(svc, "transactional-3", time_zone=TZ).start()
port = d.http_port()
producer = threading.Thread(target=produce_stream)
producer.start()
h.wait_for(lambda: h.metric(port, "tierd_orders_applied_total") >= 300,
           "tierd to apply some of the stream", daemons=[d])
d.kill()
h.log("killed -9 after %d orders, %s" % (
    len(stream_committed), "the producer still going" if producer.is_alive() else "after the stream"))
d = h.Daemon(svc, "transactional-4", time_zone=TZ).start()
port = d.http_port()
producer.join()
ends = settled_ends("orders")
h.wait_drained(svc, ends, timeout=60, daemons=[d])
h.wait_for(lambda: h.partition_metric(port, "tierd_consumer_lag") == {str(p): "0" for p in range(8)},
           "the lag of all eight partitions to be 0 after the crash", timeout=20, daemons=[d])
want, dead = h.model(committed + more + stream_committed, tz=TZ)
h.compare_state(h.read_state(svc.redis), want)
assert d.term() == 0
h.log("killed -9 among %d transactions: every committed order once, no aborted one" % 30)

# --- what marker_tick relies on in librdkafka -----------------------------------
# Redis going back in time makes tierd seek a partition back (rewind_part).
# Until a record at the new offset comes, librdkafka must report no
# position: the one from before the seek would make marker_tick move the
# stored offset past records it has not applied.
SEEK_POSITION = os.environ.get("TIERD_SEEK_POSITION_BIN") or os.path.join(
    os.path.dirname(h.tierd_binary()), "tests", "integration", "seek_position")
out = subprocess.run([SEEK_POSITION, svc.bootstrap, "orders", str(h.partition_of(CUST[0]))],
                     capture_output=True, text=True, timeout=120)
assert out.returncode == 0, "seek_position: %s%s" % (out.stdout, out.stderr)
h.log("seek_position: %s" % out.stdout.strip())

# --- the topic made again while tierd is stopped -------------------------------
# Every partition's offset was last moved past markers, and the hash kept
# names the record it is of (prev_fp "HASH@AT"): a new topic grown past it
# holds another record there, and every partition waits, applying nothing.
held = meta("offset")
assert all(svc.redis.hget("tierd:{orders.%d}:meta" % p, "prev_fp") for p in range(8))
assert any(b"@" in svc.redis.hget("tierd:{orders.%d}:meta" % p, "prev_fp") for p in range(8))
state_before = h.read_state(svc.redis)
h.make_again(svc, "orders")
h.wait_topics_ready(svc.bootstrap, ["orders"], 8)
new = []
for p in range(8):
    custs = [c for c in ("NT%05d" % i for i in range(4000)) if h.partition_of(c) == p][:5]
    new += [sale("N%d-%d" % (p, i), custs[i % 5]) for i in range(held[p] + 5)]
h.produce(svc.bootstrap, "orders", new)
d = h.Daemon(svc, "transactional-5", time_zone=TZ).start()
port = d.http_port()
h.wait_for(lambda: h.metric(port, 'tierd_partitions_past_end{input="orders"}') == 8,
           "all eight partitions to wait on the new topic", daemons=[d])
assert "is not the one tierd applied there" in d.log_text(), d.log_text()[-3000:]
assert meta("offset") == held
assert h.read_state(svc.redis) == state_before
assert d.term() == 0
h.log("the topic made again and grown past the offsets: all eight wait, nothing applied")
