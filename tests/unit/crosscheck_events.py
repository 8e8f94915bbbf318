#!/usr/bin/python3
"""Cross-language check of tierd's event codec.

A subscriber written in another language must read what tierd publishes
using nothing but the .avsc files.  This script plays that subscriber with
Python's avro library (Debian python3-avro): it has the C helper
events_sample write a TierChange and a QuotaEvent, decodes them against
schemas/*.avsc and checks the fields.  It then writes CustomerProfile
records the way a Python producer would (plain and Confluent-framed) and
has the helper decode them.

Usage: crosscheck_events.py SAMPLE_BINARY SOURCE_DIR
"""
import datetime
import io
import os
import struct
import subprocess
import sys
import tempfile

try:
    import avro.io
    import avro.schema
except ImportError:
    sys.exit("crosscheck_events: python3-avro is missing (scripts/setup installs it)")


def load_schema(source_dir, name):
    with open(os.path.join(source_dir, "schemas", name + ".avsc")) as f:
        return avro.schema.parse(f.read())


def read_one(schema, data):
    """Decodes exactly one record: leftover bytes are an error."""
    bio = io.BytesIO(data)
    record = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(bio))
    if bio.tell() != len(data):
        raise AssertionError("%d bytes left after the record" % (len(data) - bio.tell()))
    return record


def millis(value):
    """timestamp-millis comes back as a datetime when the library knows the
    logical type, as an int otherwise."""
    if isinstance(value, datetime.datetime):
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return round((value - epoch).total_seconds() * 1000)
    return value


def expect(what, got, want):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def check_tier_change(schema, data):
    tc = read_one(schema, data)
    expect("event_id", tc["event_id"], "C-42:tier:2")
    expect("customer_id", tc["customer_id"], "C-42")
    expect("sequence", tc["sequence"], 2)
    expect("previous_tier", tc["previous_tier"], 2)
    expect("reason", tc["reason"], "INITIAL_EVALUATION")
    expect("rule", tc["rule"], "INITIAL_EVALUATION")
    expect("review_month", tc["review_month"], "2025-04")
    if not (isinstance(tc["score"], float) and 0 <= tc["score"] <= 100):
        raise AssertionError("score %r" % (tc["score"],))
    expect("score has 2 decimals", round(tc["score"], 2), tc["score"])
    expect("new_tier is target_tier", tc["new_tier"], tc["target_tier"])
    expect("components", [(c["kind"], c["source"]) for c in tc["components"]],
           [("linear", "qty_avg"), ("linear", "avg_price"), ("linear", "skus_avg"),
            ("profile", "cooperation"), ("profile", "growth")])
    expect("points add up", round(sum(c["points"] for c in tc["components"]), 2),
           tc["score"])
    expect("window months", [m["month"] for m in tc["window"]],
           ["2025-02", "2025-03", "2025-04"])
    expect("window qty", [m["qty"] for m in tc["window"]], [300, 320, 340])
    expect("window amount", [m["amount"] for m in tc["window"]],
           [300 * 20000, 320 * 20000, 340 * 20000])
    expect("window grade", [m["grade"] for m in tc["window"]], ["A", "A", "A"])
    expect("upgrade_blocked_by", tc["upgrade_blocked_by"], [])
    expect("classification", tc["classification"], "Q211")
    expect("policy", (tc["policy_name"], tc["policy_version"]), ("supply-tiers", "1"))
    expect("decided_at", millis(tc["decided_at"]), 1743465600123)


def check_quota(schema, data):
    q = read_one(schema, data)
    expect("event_id", q["event_id"], "C-42:2025-04:EXCEEDED")
    expect("month", q["month"], "2025-04")
    expect("kind", q["kind"], "EXCEEDED")
    expect("caps", (q["cap"], q["effective_cap"], q["hard_cap"]), (200, 200, None))
    expect("consumed", q["consumed"], 201)
    expect("order_id", q["order_id"], "O-1001")
    expect("placed_at", millis(q["placed_at"]), 1743465600123)


def write_profile(schema, record, framed):
    bio = io.BytesIO()
    if framed:
        bio.write(b"\x00" + struct.pack(">I", 42))
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(bio))
    return bio.getvalue()


def check_profiles(sample, schema, tmp):
    updated = datetime.datetime(2025, 4, 1, 0, 0, 0, 123000, tzinfo=datetime.timezone.utc)
    good = {"customer_id": "C-42", "format": "HOSPITALITY", "market": "RURAL",
            "chain": True, "compliance_grade": "C", "cooperation": 0.3, "growth": 1.0,
            "tier_override": 5, "updated_at": updated}
    cases = [
        (good, False, "OK C-42 F 2 1 C 0.29999999999999999 1 1 5 1743465600123"),
        (good, True, "OK C-42 F 2 1 C 0.29999999999999999 1 1 5 1743465600123"),
        (dict(good, tier_override=None, format="GROCERY"), True,
         "OK C-42 Z 2 1 C 0.29999999999999999 1 0 0 1743465600123"),
        (dict(good, cooperation=1.5), False, "BAD_FIELD"),
        (dict(good, customer_id=""), True, "EMPTY_ID"),
    ]
    path = os.path.join(tmp, "profile.avro")
    for record, framed, want in cases:
        with open(path, "wb") as f:
            f.write(write_profile(schema, record, framed))
        out = subprocess.run([sample, "profile", path], check=True, capture_output=True,
                             text=True).stdout.strip()
        if not out.startswith(want):
            raise AssertionError("profile %r framed=%s: got %r, want %r..."
                                 % (record, framed, out, want))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sample, source_dir = sys.argv[1], sys.argv[2]
    policy = os.path.join(source_dir, "config", "policies", "supply-tiers.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sample, "write", policy, tmp], check=True)
        with open(os.path.join(tmp, "tier_change.avro"), "rb") as f:
            check_tier_change(load_schema(source_dir, "tier_change"), f.read())
        with open(os.path.join(tmp, "quota_event.avro"), "rb") as f:
            check_quota(load_schema(source_dir, "quota_event"), f.read())
        check_profiles(sample, load_schema(source_dir, "customer_profile"), tmp)
    print("crosscheck_events: python avro %s reads tierd's events; tierd reads its profiles"
          % getattr(avro, "__version__", "?"))


if __name__ == "__main__":
    main()
