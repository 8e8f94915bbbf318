#!/usr/bin/python3
"""tierctl events against a real broker and a tierd that published events.

Orders over the last four months (UTC): TC-A buys 1000 units a month for
three months at tier 2 (WARNING, REACHED, EXCEEDED each month, then its
initial evaluation), TC-B 95 units (one WARNING), and a dozen others a
little of everything.  After the drain, every record of tier-changes and
quota-events is read here with confluent-kafka and decoded with
python3-avro against schemas/*.avsc (harness.read_records), independently
of the C code, and turned into the line tierctl documents.  Then:

  - `tierctl events -e` prints exactly those lines, and with --customer,
    --kind, --topic, --reason, --from/--to (RFC 3339 and epoch ms) exactly
    the lines each filter selects, on decided_at / placed_at;
  - a bad --kind is refused (exit 2);
  - without -e it follows: it prints what exists, then a tier change tierd
    decides after it started, and stops cleanly on SIGTERM (exit 0).
"""
import datetime as dt
import io
import json
import os
import queue
import signal
import subprocess
import threading

import avro.io
import avro.schema

import harness as h

TZ = "UTC"
TIERCTL = h.tierctl_binary()
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

svc = h.Services("tierctl-events")
now = h.now_ms() - 1000
M = h.month_index(now, TZ)


def at(month, day=10):
    return h.month_start_ms(month, TZ) + (day - 1) * 86400_000 + 3600_000


def sale(cust, oid, when, qty, skus=1, price=27500):
    per = [qty // skus + (1 if i < qty % skus else 0) for i in range(skus)]
    lines = [{"sku": "SKU-%02d" % i, "quantity": q, "unit_price": price}
             for i, q in enumerate(per)]
    o = h.order(oid, cust, when, "SALE", lines)
    return h.Rec(h.partition_of(cust), cust.encode(), h.encode(o), o)


orders = [sale("TC-A", "A-%d" % k, at(m), 1000, skus=20) for k, m in enumerate((M - 3, M - 2, M - 1))]
orders.append(sale("TC-B", "B-0", at(M - 1), 95))
others = ["TC-O%02d" % i for i in range(12)]
for i, c in enumerate(others):
    for k, m in enumerate((M - 3, M - 2, M - 1)):
        if (i + k) % 3:
            orders.append(sale(c, "%s-%d" % (c, k), at(m, 5 + i), 40 + 37 * i, skus=1 + i % 4,
                               price=8000 + 3000 * i))
when_m = max(h.month_start_ms(M, TZ) + 1000, now - 60_000)
orders += [sale(c, c + "-M", when_m, 5) for c in ["TC-A", "TC-B"] + others]
orders.sort(key=lambda r: r.order["placed_at"])
h.produce(svc.bootstrap, "orders", orders)
ends = h.end_offsets(svc.bootstrap, "orders")

d = h.Daemon(svc, "t", time_zone=TZ).start()
h.wait_drained(svc, ends, timeout=60, daemons=[d])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox to drain", daemons=[d])
h.log("tierd applied %d orders" % len(orders))

# ------------------------------------------------ the lines, decoded in Python
SCHEMA = {t: avro.schema.parse(open(os.path.join(h.ROOT, "schemas", f)).read())
          for t, f in (("tier-changes", "tier_change.avsc"), ("quota-events", "quota_event.avsc"))}
WHEN = {"tier-changes": "decided_at", "quota-events": "placed_at"}
REASON = {"tier-changes": "reason", "quota-events": "kind"}


def ms_of(t):
    return (t - EPOCH) // dt.timedelta(milliseconds=1)


def iso(ms):
    t = EPOCH + dt.timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def want_lines():
    """Every event as tierctl documents its line, in (topic, partition,
    offset) order; the fields in schema order."""
    out = []
    for topic, schema in SCHEMA.items():
        reader = avro.io.DatumReader(schema)
        for hdr, key, value, part, off in h.read_records(svc.bootstrap, topic):
            ev = reader.read(avro.io.BinaryDecoder(io.BytesIO(value)))
            line = {"topic": topic, "partition": part, "offset": off,
                    "header_event_id": hdr.get("tierd.event_id")}
            for f in schema.fields:
                v = ev[f.name]
                if f.name.endswith("_at"):
                    line[f.name] = iso(ms_of(v))
                    line[f.name + "_ms"] = ms_of(v)
                else:
                    line[f.name] = v
            out.append(line)
    return out


def tierctl(*args, rc=0):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
    p = subprocess.run([TIERCTL, "-c", d.cfg, "events", *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert p.returncode == rc, "tierctl events %s: exit %d, want %d\n%s" % (
        " ".join(args), p.returncode, rc, p.stderr[-3000:])
    return p.stdout, p.stderr


def events(*args):
    """`tierctl events -e ARGS`: its lines parsed, in (topic, partition,
    offset) order (tierctl interleaves partitions as they come), each line's
    keys in the documented order."""
    out, err = tierctl("-e", *args)
    assert "note:" not in err, err
    lines = [json.loads(l) for l in out.splitlines()]
    for l in lines:
        topic = l.get("topic")
        keys = ["topic", "partition", "offset", "header_event_id"]
        for f in SCHEMA[topic].fields:
            keys += [f.name, f.name + "_ms"] if f.name.endswith("_at") else [f.name]
        assert list(l) == keys, (list(l), keys)
    return sorted(lines, key=lambda l: (list(SCHEMA).index(l["topic"]), l["partition"], l["offset"]))


every = want_lines()
a_tc = [l for l in every if l["customer_id"] == "TC-A" and l["topic"] == "tier-changes"]
a_q = [l for l in every if l["customer_id"] == "TC-A" and l["topic"] == "quota-events"]
assert [l["reason"] for l in a_tc] == ["NEW_CUSTOMER", "INITIAL_EVALUATION"], a_tc
assert len(a_q) == 9 and all(l["header_event_id"] == l["event_id"] for l in a_q), a_q
assert a_tc[1]["score"] == 52.5 and a_tc[1]["window"], a_tc[1]

# ------------------------------------------------------------------ filters
got = events()
assert got == every, "all: %d lines, want %d; first difference %s" % (
    len(got), len(every), next(((g, w) for g, w in zip(got, every) if g != w), None))
got = events("--customer", "TC-A")
assert got == a_tc + a_q, got
h.log("events -e: all %d events equal to the Python decoding; --customer TC-A: %d" % (
    len(every), len(got)))

assert events("--customer", "TC-A", "--kind", "quota") == a_q
assert events("--customer", "TC-A", "--kind", "tier_change") == a_tc
assert events("--topic", "tier-changes") == [l for l in every if l["topic"] == "tier-changes"]
assert events("--topic", "quota-events", "--kind", "quota") == [
    l for l in every if l["topic"] == "quota-events"]
for reason in ("EXCEEDED", "WARNING", "INITIAL_EVALUATION", "NEW_CUSTOMER"):
    want = [l for l in every if l[REASON[l["topic"]]] == reason]
    assert want, reason
    assert events("--reason", reason) == want, reason
assert events("--reason", "WARNING", "--customer", "TC-B") == [
    l for l in every if l["customer_id"] == "TC-B" and l.get("kind") == "WARNING"]
# [from, to) on decided_at / placed_at: the month M-2, as RFC 3339 and as epoch ms.
lo, hi = h.month_start_ms(M - 2, TZ), h.month_start_ms(M - 1, TZ)
want = [l for l in every if lo <= l[WHEN[l["topic"]] + "_ms"] < hi]
assert want and len(want) < len(every), want
lo_text = dt.datetime.fromtimestamp(lo / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
assert events("--from", lo_text, "--to", str(hi)) == want
assert events("--from", str(lo), "--to", str(hi), "--customer", "TC-A", "--kind", "quota") == [
    l for l in want if l["customer_id"] == "TC-A" and l["topic"] == "quota-events"]
# The bounds: --from includes an event at exactly its time, --to excludes it.
edge = a_q[0]
t = str(edge["placed_at_ms"])
assert edge in events("--from", t, "--customer", "TC-A")
assert edge not in events("--to", t, "--customer", "TC-A")
assert edge in events("--to", str(edge["placed_at_ms"] + 1), "--customer", "TC-A")
tierctl("-e", "--kind", "orders", rc=2)
tierctl("-e", "--topic", "orders", rc=2)
tierctl("-e", "--kind", "quota", "--topic", "tier-changes", rc=2)
tierctl("-e", "--from", "yesterday", rc=2)
h.log("--kind, --topic, --reason, --from/--to select exactly their events; bad ones exit 2")

# ------------------------------------------------------------------ following
env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
follow = subprocess.Popen([TIERCTL, "-c", d.cfg, "events", "--customer", "TC-NEW"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
lines = queue.Queue()
threading.Thread(target=lambda: [lines.put(l) for l in follow.stdout], daemon=True).start()
try:
    h.produce(svc.bootstrap, "orders", [sale("TC-NEW", "N-0", h.now_ms() - 1000, 3)])
    got = []
    h.wait_for(lambda: (got.extend(lines.get_nowait() for _ in range(lines.qsize())) or
                        any(json.loads(l)["topic"] == "quota-events" or
                            json.loads(l)["reason"] == "NEW_CUSTOMER" for l in got)),
               "tierctl events to print TC-NEW's placement", timeout=60, daemons=[d])
    assert follow.poll() is None, "tierctl events exited while following"
    first = json.loads(got[0])
    assert first["customer_id"] == "TC-NEW" and first["reason"] == "NEW_CUSTOMER", first
    assert first["header_event_id"] == "TC-NEW:tier:1", first
finally:
    follow.send_signal(signal.SIGTERM)
    rc = follow.wait(timeout=30)
assert rc == 0, "tierctl events following: exit %d\n%s" % (rc, follow.stderr.read())
h.log("following: TC-NEW's placement printed as tierd published it; SIGTERM exits 0")
h.log("PASS")
