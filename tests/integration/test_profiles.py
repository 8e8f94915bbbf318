#!/usr/bin/python3
"""Customer profiles on the real broker (docs/behaviour.md, "Customer
profiles" and the compliance and override rules): a lowered grade caps the
tier at once (COMPLIANCE), an override sets it at once (OVERRIDE) and
republishing it does nothing, a tombstone deletes the stored profile without
moving the tier, a tombstone for a customer tierd never saw is harmless, and
a tombstone without a key or a profile that is not Avro goes to the
dead-letter topic while tierd keeps running."""
import datetime as dt
import io
import os

import avro.io
import avro.schema

import harness as h

PROFILE = avro.schema.parse(open(os.path.join(h.ROOT, "schemas", "customer_profile.avsc")).read())
svc = h.Services("profiles")
now = h.now_ms()
A, B = "Z-PROF-A", "Z-PROF-B"
pa = h.partition_of(A)


def profile(cust, grade="A", override=None):
    v = {"customer_id": cust, "format": "MALL", "market": "URBAN", "chain": False,
         "compliance_grade": grade, "cooperation": 0.6, "growth": 0.6,
         "tier_override": override,
         "updated_at": dt.datetime.fromtimestamp(now / 1000, dt.timezone.utc)}
    buf = io.BytesIO()
    avro.io.DatumWriter(PROFILE).write(v, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def send_profiles(recs):
    h.produce(svc.bootstrap, "customer-profiles", recs)
    ends = h.end_offsets(svc.bootstrap, "customer-profiles")

    def joined():
        for p, hi in ends.items():
            v = svc.redis.hget("tierd:{orders.%d}:meta" % p, "poffset")
            if hi and (v is None or int(v) < hi):
                return False
        return True
    h.wait_for(joined, "the profiles to be joined", daemons=[d])


def events_of(cust):
    h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox to drain", daemons=[d])
    evs = h.decode_events(h.read_topic(svc.bootstrap, "tier-changes"), "tier_change.avsc")
    return sorted((ev for ev, _ in evs.values() if ev["customer_id"] == cust),
                  key=lambda ev: ev["sequence"])


def stored_profile(cust, p):
    return svc.redis.hget("tierd:{orders.%d}:p" % p, cust)


def tier_of(cust, p):
    lines = h.dump(svc.redis, "--partition", str(p), "--customer", cust)
    return [o for o in lines if o["type"] == "customer"][0]["tier"]


d = h.Daemon(svc, "p").start()
send_profiles([h.Rec(pa, A.encode(), profile(A))])
assert stored_profile(A, pa) is not None, "the profile is stored before any order"

o = h.order("PA-1", A, now - 60_000, "SALE", [{"sku": "S", "quantity": 5, "unit_price": 100}])
h.produce(svc.bootstrap, "orders", [h.Rec(pa, A.encode(), h.encode(o), o)])
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
h.wait_for(lambda: len(events_of(A)) == 1, "the placement", daemons=[d])
first = events_of(A)[0]
assert first["reason"] == "NEW_CUSTOMER", first
assert first["new_tier"] == 2, first  # supply-tiers places a new customer at tier 2
h.log("placed %s at tier 2" % A)

# Grade D: capped at tier 1 at once.
send_profiles([h.Rec(pa, A.encode(), profile(A, grade="D"))])
evs = events_of(A)
assert len(evs) == 2 and evs[1]["reason"] == "COMPLIANCE" and evs[1]["new_tier"] == 1, evs
assert tier_of(A, pa) == 1

# An override sets the tier at once; the same override again does nothing.
send_profiles([h.Rec(pa, A.encode(), profile(A, override=4))])
evs = events_of(A)
assert evs[-1]["reason"] == "OVERRIDE" and evs[-1]["new_tier"] == 4, evs[-1]
n = len(evs)
send_profiles([h.Rec(pa, A.encode(), profile(A, override=4))])
assert len(events_of(A)) == n, "republishing the same override changes nothing"
assert tier_of(A, pa) == 4
h.log("grade D capped at once, override to 4 applied once")

# Tombstones: A's profile is deleted and its tier stays; B was never seen;
# a keyless tombstone and a non-Avro profile are dead letters.
send_profiles([h.Rec(pa, A.encode(), None),
               h.Rec(h.partition_of(B), B.encode(), None),
               h.Rec(pa, b"", None),
               h.Rec(pa, A.encode(), b"\x01garbage")])
assert stored_profile(A, pa) is None, "a tombstone deletes the profile"
assert stored_profile(B, h.partition_of(B)) is None
assert len(events_of(A)) == n and tier_of(A, pa) == 4, "deleting a profile moves no tier"
assert events_of(B) == []
dead = [(hdr["tierd.source.topic"], hdr["tierd.reason"]) for hdr, _k, _v in h.read_dead_letters(svc.bootstrap)]
assert sorted(dead) == [("customer-profiles", "EMPTY_ID"), ("customer-profiles", "NOT_AVRO")], dead
assert d.alive()
h.log("tombstones: profile deleted, tier kept; keyless and garbage records dead-lettered")

# Orders keep flowing for A after all that.
o = h.order("PA-2", A, now - 30_000, "SALE", [{"sku": "S", "quantity": 1, "unit_price": 100}])
h.produce(svc.bootstrap, "orders", [h.Rec(pa, A.encode(), h.encode(o), o)])
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), daemons=[d])
assert d.term() == 0
h.log("PASS")
