#!/usr/bin/python3
"""/metrics, /healthz and /readyz of a running tierd (docs/operations.md),
against the real broker and Redis: the counters equal what the orders
produced imply (applied, duplicates, dead letters by reason), every
partition's lag is 0 once drained, the outbox empties and every decided
event is counted as published; /readyz turns 503 while Redis is down and 200
when it is back, /healthz stays 200 meanwhile; SIGTERM closes the port."""
import collections
import http.client
import re
import signal
import socket

import harness as h


def get(port, path, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def scrape(port):
    """{(name, frozenset(labels)): value} of the exposition."""
    status, body = get(port, "/metrics")
    assert status == 200, status
    out = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, "not an exposition line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(ms, metric, **labels):
    return ms.get((metric, frozenset(labels.items())))


svc = h.Services("metrics")
recs = h.generate(6000, 300, seed=4242, bad_per_kind=2)
d = h.Daemon(svc, "m").start()
port = d.http_port()
h.wait_for(lambda: get(port, "/healthz")[0] == 200, "/healthz to say alive", daemons=[d])
assert get(port, "/nope")[0] == 404
assert get(port, "/metrics", "POST")[0] == 405

h.produce(svc.bootstrap, "orders", recs)
want_state, want_dead = h.model(recs)
n_good = sum(1 for r in recs if (r.partition, r.offset) not in want_dead)
ends = h.end_offsets(svc.bootstrap, "orders")
h.wait_drained(svc, ends, daemons=[d])


def settled():
    ms = scrape(port)
    return (value(ms, "tierd_orders_applied_total") == n_good - h.model.duplicates and
            value(ms, "tierd_outbox_depth") == 0 and
            all(value(ms, "tierd_consumer_lag", partition=str(p)) == 0 for p in range(8)))


h.wait_for(settled, "the counters to catch up and the outbox to drain", daemons=[d])
ms = scrape(port)
assert value(ms, "tierd_duplicates_ignored_total") == h.model.duplicates, (
    value(ms, "tierd_duplicates_ignored_total"), h.model.duplicates)
dead = {dict(k[1])["reason"]: v for k, v in ms.items() if k[0] == "tierd_dead_letters_total"}
want = collections.Counter(want_dead.values())
assert {r: n for r, n in dead.items() if n} == want, (dead, want)
assert dead.get("BAD_FIELD") == 0, "every reason is exported, even at 0 (BAD_FIELD is profiles')"
decided = (value(ms, "tierd_events_decided_total", kind="tier_change") +
           value(ms, "tierd_events_decided_total", kind="quota"))
assert value(ms, "tierd_events_decided_total", kind="tier_change") >= 300 * 0.9, "new customers"
assert value(ms, "tierd_events_published_total") == decided, (ms, decided)
by_kind = {dict(k[1])["kind"]: v for k, v in ms.items() if k[0] == "tierd_quota_events_total"}
assert set(by_kind) == {"WARNING", "REACHED", "EXCEEDED", "HARD_CAP_EXCEEDED"}, by_kind
assert sum(by_kind.values()) == value(ms, "tierd_events_decided_total", kind="quota"), by_kind
assert value(ms, "tierd_redis_round_trip_seconds_count") > 0
assert value(ms, "tierd_batch_records_count") > 0
assert value(ms, "tierd_order_latency_seconds_count") == len(recs), "every order record's age"
assert value(ms, 'tierd_order_latency_seconds_bucket', le="+Inf") == len(recs)
assert value(ms, "tierd_reviews_total") > 0
assert value(ms, "tierd_review_duration_seconds_count") == value(ms, "tierd_reviews_total")
assert value(ms, "tierd_policy_info", name="supply-tiers", version="1") == 1, [
    k for k in ms if k[0] == "tierd_policy_info"]
assert value(ms, "tierd_ready") == 1
assert get(port, "/readyz") == (200, "ready\n")
node = "127.0.0.1:%d" % svc.redis_port
assigned = sorted(int(dict(k[1])["partition"]) for k in ms if k[0] == "tierd_partition_redis_up")
assert assigned == list(range(8)), assigned
for p in assigned:
    assert value(ms, "tierd_partition_redis_up", partition=str(p), node=node) == 1, p
h.log("metrics agree with the stream: %d applied, %d duplicates, %d dead, %d events" % (
    n_good - h.model.duplicates, h.model.duplicates, len(want_dead), decided))

svc.run("stop-redis")
h.wait_for(lambda: get(port, "/readyz")[0] == 503, "/readyz to say not ready", daemons=[d])
# Which partitions wait on which node: every one of them, on the one node.
want = "not ready\n" + "".join("partition %d waits on redis %s\n" % (p, node) for p in range(8))
h.wait_for(lambda: get(port, "/readyz") == (503, want), "/readyz to name the waiting partitions",
           daemons=[d])
ms = scrape(port)
assert all(value(ms, "tierd_partition_redis_up", partition=str(p), node=node) == 0
           for p in range(8)), [k for k in ms if k[0] == "tierd_partition_redis_up"]
assert get(port, "/healthz")[0] == 200, "a Redis outage is not a reason to restart tierd"
svc.run("start-redis")
h.wait_for(lambda: get(port, "/readyz")[0] == 200, "/readyz to recover", daemons=[d])
h.log("/readyz: 503 while Redis was down, 200 again after; /healthz stayed 200")

assert d.term() == 0
s = socket.socket()
try:
    assert s.connect_ex(("127.0.0.1", port)) != 0, "the port is closed after SIGTERM"
finally:
    s.close()
h.log("PASS")
