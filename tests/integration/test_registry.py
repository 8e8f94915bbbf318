"""A schema registry on input and output: a real Apicurio Registry (its
Confluent API), a real broker and Redis, and records framed by the
Confluent Python client's AvroSerializer (fastavro underneath), so the
framing and the encodings come from code no one here wrote.

Proves, in one run:
- Orders written with three registered versions of Order, interleaved in
  one topic (v1 = schemas/order.avsc; v2 adds a defaulted field and moves
  currency; v3 drops that field again, adds a symbol to OrderKind and makes
  currency a union), are all applied: the aggregates are exactly the
  model's.
- A record framed with an id the registry does not know is dead-lettered
  UNKNOWN_SCHEMA; one whose writer schema does not resolve (customer_id a
  long) INCOMPATIBLE_SCHEMA, and so is a v3 order of the new kind EXCHANGE
  (OrderKind has no default); /metrics counts both reasons; the partitions
  keep going.
- The registry stopped (SIGSTOP) for 10 s while records of a version not
  yet cached arrive: tierd pauses and retries, nothing is dead-lettered,
  nothing is lost, and it resumes by itself once the registry answers.
- Events on tier-changes and quota-events are framed with the ids
  registered under tier-changes-value and quota-events-value; the Confluent
  client's AvroDeserializer reads every one, and so does a reader on the
  event schemas as they were before their enums had defaults; a reason or
  kind added later is read by today's schema as its default, UNKNOWN;
  tierctl events decodes them through the registry too.
- A subject that refuses tierd's event schema (incompatible with what it
  holds) stops tierd at start with the registry's message.
"""
import copy
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import harness as h

ROOT = h.ROOT
sys.path.insert(0, subprocess.run(
    ["bash", "-c", '. scripts/kafka/env.sh; . scripts/registry/env.sh; echo "$TIERD_PYTHONPATH"'],
    cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout.strip())

import fastavro  # noqa: E402  (from the cache scripts/setup fills)
from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: E402
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402


def avsc(name):
    with open(os.path.join(ROOT, "schemas", name)) as f:
        return json.load(f)


V1 = avsc("order.avsc")


def field(schema, name):
    return next(f for f in schema["fields"] if f["name"] == name)


def v2_of(v1):
    s = copy.deepcopy(v1)
    cur = field(s, "currency")
    s["fields"].remove(cur)
    s["fields"].insert(1, cur)  # reordered
    s["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    return s


def v3_of(v2):
    s = copy.deepcopy(v2)
    s["fields"] = [f for f in s["fields"] if f["name"] != "channel"]  # removed again
    field(s, "kind")["type"]["symbols"].append("EXCHANGE")
    field(s, "currency")["type"] = ["string", "null"]  # a union, widened from string
    return s


V2 = v2_of(V1)
V3 = v3_of(V2)
V4 = copy.deepcopy(V3)  # a version first used while the registry is stopped
V4["fields"].append({"name": "note", "type": "string", "default": ""})
BAD = {"type": "record", "name": "Order", "namespace": "tierd",
       "fields": [{"name": "order_id", "type": "string"}, {"name": "customer_id", "type": "long"}]}


def http(url, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def serializer(sr, schema, subject="orders-value"):
    return AvroSerializer(sr, json.dumps(schema),
                          conf={"subject.name.strategy": lambda ctx, name: subject})


def framed(ser, value, topic="orders"):
    return ser(value, SerializationContext(topic, MessageField.VALUE))


def dead_metrics(port):
    out = {}
    for line in h.http_get(port, "/metrics")[1].splitlines():
        if line.startswith("tierd_dead_letters_total{reason=\""):
            out[line.split('"')[1]] = int(float(line.split()[-1]))
    return out


def registry_pid(svc):
    with open(os.path.join(svc.dir, "registry.pid")) as f:
        return int(f.read())


def older(schema, enum_name):
    """The event schema as it was before its enum had a default."""
    s = copy.deepcopy(schema)
    for f in s["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("name") == enum_name:
            t["symbols"].remove("UNKNOWN")
            del t["default"]
            del t["doc"]
    return s


def main():
    svc = h.Services("registry")
    svc.run("start-registry")
    with open(os.path.join(svc.dir, "env")) as f:
        url = dict(l.strip().split("=", 1) for l in f if "=" in l)["TIERD_SCHEMA_REGISTRY_URL"]
    # Apicurio's default is NONE; the Confluent default, BACKWARD, is what
    # a shop runs: every version below must pass it.
    http(url + "/config", "PUT", {"compatibility": "BACKWARD"})
    sr = SchemaRegistryClient({"url": url})
    sers = [serializer(sr, s) for s in (V1, V2, V3)]  # each registers on first use

    # ---- phase 1: three versions interleaved, and the refusals
    recs = [r for r in h.generate(3000, 150, seed=10, bad_per_kind=0, dup_ratio=0.0)
            if r.order is not None and r.expect is None]
    for i, r in enumerate(recs):
        o = dict(r.order)
        if i % 3 == 1:
            o["channel"] = "web" if i % 2 else None
        r.value = framed(sers[i % 3], o)
    ids = sorted({int.from_bytes(r.value[1:5], "big") for r in recs})
    assert len(ids) == 3, ids
    h.log("orders framed with schema ids %s" % ids)
    extra = []
    t = h.now_ms() - 3600_000
    cust = recs[0].order["customer_id"]
    p = h.partition_of(cust)
    good = h.order("X-EXCH", cust, t, "SALE", [{"sku": "S", "quantity": 1, "unit_price": 1}])
    exch = dict(good, kind="EXCHANGE")
    extra.append(h.Rec(p, cust.encode(), framed(sers[2], exch), None, "INCOMPATIBLE_SCHEMA"))
    bad = framed(serializer(sr, BAD, "orders-incompatible-value"),
                 {"order_id": "X-BAD", "customer_id": 42})
    extra.append(h.Rec(p, cust.encode(), bad, None, "INCOMPATIBLE_SCHEMA"))
    unknown = b"\x00" + (999999).to_bytes(4, "big") + framed(sers[0], good)[5:]
    extra.append(h.Rec(p, cust.encode(), unknown, None, "UNKNOWN_SCHEMA"))
    stream = recs[:1000] + extra + recs[1000:]
    h.produce(svc.bootstrap, "orders", stream)

    d = h.Daemon(svc, "t1", extra={"schema_registry": "\n  url: \"%s\"\n  timeout_ms: 500" % url})
    d.start()
    port = d.http_port()
    h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
    want, want_dead = h.model(stream)
    h.compare_state(h.read_state(svc.redis), want)
    h.check_dead_letters(svc.bootstrap, stream, want_dead, allow_repeats=False)
    h.wait_for(lambda: dead_metrics(port).get("UNKNOWN_SCHEMA") == 1 and
               dead_metrics(port).get("INCOMPATIBLE_SCHEMA") == 2, "dead letter metrics", daemons=[d])
    h.log("phase 1: %d orders over three versions applied; refusals %s" % (len(recs), sorted(want_dead.values())))

    # ---- phase 2: the registry stops while a version not yet cached arrives
    ser4 = serializer(sr, V4)
    # This month only: none LATE, so any dead letter would be the outage's.
    more = [r for r in h.generate(600, 150, seed=11, months=1, bad_per_kind=0, dup_ratio=0.0)
            if r.order is not None and r.expect is None]
    for r in more:
        r.order = dict(r.order, order_id="P2-" + r.order["order_id"])
        r.value = framed(ser4, r.order)
    dead_before = dead_metrics(port)
    os.kill(registry_pid(svc), signal.SIGSTOP)
    stopped = time.time()
    try:
        h.produce(svc.bootstrap, "orders", more)
        h.wait_for(lambda: "pausing this partition and retrying" in d.log_text(),
                   "tierd pausing on the stopped registry", daemons=[d])
        # The outage itself lasts 10 s: that is the scenario, not a wait.
        time.sleep(max(0.0, 10 - (time.time() - stopped)))
        assert d.alive()
        assert dead_metrics(port) == dead_before, "dead letters during the outage"
    finally:
        os.kill(registry_pid(svc), signal.SIGCONT)
    h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
    want, want_dead2 = h.model(stream + more)
    assert want_dead2 == want_dead, "the model expects new dead letters in phase 2"
    h.compare_state(h.read_state(svc.redis), want)
    h.check_dead_letters(svc.bootstrap, stream + more, want_dead, allow_repeats=False)
    assert dead_metrics(port) == dead_before, (dead_metrics(port), dead_before)
    h.log("phase 2: registry stopped %.0fs; %d orders applied after it, nothing dead-lettered"
          % (10, len(more)))

    # ---- events: framed with the registered ids, read by other readers
    deser = AvroDeserializer(sr)
    for topic, schema_file, enum_name, enum_field, future_symbol in (
            ("tier-changes", "tier_change.avsc", "TierChangeReason", "reason", "MANUAL_REVIEW"),
            ("quota-events", "quota_event.avsc", "QuotaKind", "kind", "FORECAST")):
        reg = http(url + "/subjects/%s-value/versions/latest" % topic)
        writer = fastavro.parse_schema(json.loads(reg["schema"]))
        old = fastavro.parse_schema(older(avsc(schema_file), enum_name))
        vals = h.read_topic(svc.bootstrap, topic)
        assert vals, "no events on %s" % topic
        for _key, v in vals:
            assert v[0] == 0 and int.from_bytes(v[1:5], "big") == reg["id"], (topic, v[:5])
            ev = deser(v, SerializationContext(topic, MessageField.VALUE))
            ev_old = fastavro.schemaless_reader(io.BytesIO(v[5:]), writer, old)
            assert ev["event_id"] == ev_old["event_id"] and ev[enum_field] == ev_old[enum_field]
        # A symbol added later: today's schema reads it as its default.
        future = avsc(schema_file)
        next(f for f in future["fields"] if f["name"] == enum_field)["type"]["symbols"].append(future_symbol)
        buf = io.BytesIO()
        sample = dict(ev, **{enum_field: future_symbol})
        fastavro.schemaless_writer(buf, fastavro.parse_schema(future), sample)
        buf.seek(0)
        back = fastavro.schemaless_reader(buf, fastavro.parse_schema(future), writer)
        assert back[enum_field] == "UNKNOWN", back[enum_field]
        h.log("%s: %d events framed with id %d, read by AvroDeserializer and the older schema"
              % (topic, len(vals), reg["id"]))
        # tierctl events reads them through the registry too.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
        kind = "tier_change" if topic == "tier-changes" else "quota"
        out = subprocess.run([h.tierctl_binary(), "-c", d.cfg, "events", "-e", "--kind", kind],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        lines = [json.loads(l) for l in out.stdout.splitlines()]
        assert len(lines) == len(vals) and all("error" not in l for l in lines), out.stdout[:500]
        by_id = {l["event_id"]: l for l in lines}
        assert by_id[ev["event_id"]][enum_field] == ev[enum_field]
    assert d.term() == 0

    # ---- a subject that refuses tierd's event schema stops tierd at start
    http(url + "/subjects/refusing-value/versions", "POST", {"schema": json.dumps({"type": "string"})})
    d2 = h.Daemon(svc, "t2", extra={"schema_registry": "\n  url: \"%s\"" % url,
                                    "topics": "\n  tier_changes: refusing"})
    d2.start()
    rc = d2.proc.wait(timeout=60)
    assert rc != 0, "tierd started on a subject that refuses its schema"
    assert "registering under refusing-value: HTTP 409" in d2.log_text(), d2.log_text()[-2000:]
    h.log("refused registration: tierd exited %d with the registry's message" % rc)
    print("test_registry: OK")


if __name__ == "__main__":
    main()
