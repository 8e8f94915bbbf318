"""An independent model of the decisions tierd publishes, for the stream
tests that run many months (test_crash_months.py, test_redis_rollback.py).

It is written from docs/behaviour.md (aggregates to quota events) and the
choices listed in
config/policies/README.md, never from tierd's C code, for one policy of
its own (POLICY below) whose score is a single linear component on
qty_avg: T* then follows exactly from the window's total quantity, with
integer arithmetic and no floating point doubt.

What the model assumes about the stream, and the scenario generator below
keeps:
  - orders of a partition arrive in placed_at order (re-sent duplicates
    aside), so no order is LATE and month boundaries are clean;
  - a customer's first order is a SALE;
  - a profile change is applied at a moment the test controls: after every
    order before it is applied and before any order after it is produced
    (profiles join in processing time), and only for customers past their
    initial evaluation;
  - no overrides.

Readings where the rules could be read two ways (same as test_decisions.py):
  - the upgrade's 90 % uses the plain cap of the tier in effect, not the
    holiday effective cap;
  - the tier in effect of a month is the tier held when it began; a grade
    lowered mid-month counts as the month's worst grade;
  - the review's compliance cap uses the worse of the grade now and the
    worst grade of the reviewed month.
"""
import datetime as dt
import io
import os
import random
from fractions import Fraction
from zoneinfo import ZoneInfo

import avro.io
import avro.schema

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TZ = "Asia/Shanghai"
KINDS = ("WARNING", "REACHED", "EXCEEDED", "HARD_CAP_EXCEEDED")
NEW, INIT, UP, DOWN, COMPL = ("NEW_CUSTOMER", "INITIAL_EVALUATION", "UPGRADE", "DOWNGRADE",
                              "COMPLIANCE")


def ym(m):
    return "%04d-%02d" % (m // 12, m % 12 + 1)


def month_of(ms, tz=TZ):
    d = dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz))
    return d.year * 12 + d.month - 1


def month_start(m, tz=TZ):
    return int(dt.datetime(m // 12, m % 12 + 1, 1, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


# ------------------------------------------------------------------ policy

class Policy:
    """The numbers of the test policy, and its YAML text."""
    name, version = "months-model", "1"
    window = 3
    new_months, new_tier = 3, 2
    caps = (50, 100, 200, 400, 700, 1000, 1500, 2000)
    # qty_avg thresholds 0 60 120 240 440 700 1000 1500: T* k needs roughly
    # 60 % of cap(k) a month, so buyers near their cap move up.
    min_scores = (0, 3, 6, 12, 22, 35, 50, 75)
    qty_hi = 2000                  # linear(qty_avg, 0, 2000, 100 points)
    compliance = {"C": 2, "D": 1}
    hard_caps = {"default": 2000, "SUPERMARKET": 5000, "MALL": 5000}

    def __init__(self, holiday_month=None, tz=TZ):
        self.holiday_month, self.tz = holiday_month, tz

    def cap(self, tier):
        return self.caps[tier - 1]

    def floor(self, tier):
        return 0 if tier == 1 else self.caps[tier - 2]

    def upgrade_qty(self, tier):
        return -(-9 * self.cap(tier) // 10)            # ceil(0.9 x cap)

    def effective_cap(self, tier, month):
        cap = self.cap(tier)
        return cap + cap * 3 // 10 if month == self.holiday_month else cap

    def hard_cap(self, fmt):
        return self.hard_caps.get(fmt, self.hard_caps["default"])

    def score_c(self, total):
        """Score in hundredths: 100 x (total / W) / qty_hi, at most 100,
        rounded half up."""
        x = Fraction(10000 * total, self.window * self.qty_hi)
        return min(10000, int(x + Fraction(1, 2)))

    def target(self, total):
        sc = self.score_c(total)
        return max(k + 1 for k, s in enumerate(self.min_scores) if s * 100 <= sc)

    def text(self):
        hol = ""
        if self.holiday_month is not None:
            hol = "holidays:\n  - { name: Test holiday, from: %s-10, to: %s-12 }\n" % (
                ym(self.holiday_month), ym(self.holiday_month))
        tiers = "".join("  - { tier: %d, min_score: %d, cap: %d }\n" % (k + 1, s, c)
                        for k, (s, c) in enumerate(zip(self.min_scores, self.caps)))
        return ("name: %s\nversion: \"%s\"\ntime_zone: %s\nwindow_months: %d\n"
                "new_customer: { months: %d, tier: %d }\n"
                "upgrade: { rule: hysteresis, cap_ratio: 0.9, grade_at_least: B, on_order: false }\n"
                "downgrade: { rule: floor }\n"
                "compliance: { C: 2, D: 1 }\n"
                "quota:\n  warning_ratio: 0.9\n  holiday_flex: 0.3\n"
                "  hard_caps: { default: 2000, SUPERMARKET: 5000, MALL: 5000 }\n"
                "%s"
                "profile_defaults: { format: OTHER, market: URBAN, chain: false, grade: A, "
                "cooperation: 0.6, growth: 0.6 }\n"
                "score:\n  - { kind: linear, metric: qty_avg, lo: 0, hi: %d, points: 100 }\n"
                "tiers:\n%s") % (self.name, self.version, self.tz, self.window, self.new_months,
                                 self.new_tier, hol, self.qty_hi, tiers)


# ------------------------------------------------------------------- model

class _Month:
    __slots__ = ("qty", "te", "grade", "fired")

    def __init__(self):
        self.qty, self.te, self.grade, self.fired = 0, None, None, set()


class _Cust:
    def __init__(self, cid):
        self.id, self.tier, self.first, self.evaluated, self.seq = cid, 0, None, False, 0
        self.grade, self.fmt, self.months = "A", "OTHER", {}


class _Part:
    def __init__(self):
        self.cur, self.customers, self.seen = None, [], set()


class Model:
    """Feed it what tierd applies, in the order tierd applies it (each
    partition in offset order; profile changes at their barrier); read
    .tiers and .quotas: {event_id: fields}."""

    def __init__(self, policy):
        self.p = policy
        self.custs, self.parts = {}, {}
        self.tiers, self.quotas = {}, {}
        self.reviews = 0

    def cust(self, cid):
        c = self.custs.get(cid)
        if c is None:
            c = self.custs[cid] = _Cust(cid)
        return c

    def _tier_event(self, c, prev, new, reason, month=None, total=None):
        c.seq += 1
        ev = dict(customer_id=c.id, sequence=c.seq, previous_tier=prev, new_tier=new,
                  reason=reason, review_month=ym(month) if month is not None else None,
                  policy_name=self.p.name, policy_version=self.p.version)
        if total is not None:
            ev["target_tier"] = self.p.target(total)
            ev["score"] = self.p.score_c(total) / 100
        self.tiers["%s:tier:%d" % (c.id, c.seq)] = ev

    # -- profiles
    def profile(self, part, cid, grade, fmt):
        """A profile record applied now (processing time)."""
        c = self.cust(cid)
        c.fmt = fmt
        if c.tier == 0:
            c.grade = grade   # the first order reads it
            return
        pt = self.parts[part]
        if pt.cur is not None:
            mo = c.months.setdefault(pt.cur, _Month())
            if mo.grade is None or grade > mo.grade:
                if mo.te is None:
                    mo.te = c.tier
                mo.grade = grade
        c.grade = grade
        cap = self.p.compliance.get(grade)
        if cap and c.tier > cap:
            prev, c.tier = c.tier, cap
            self._tier_event(c, prev, cap, COMPL)

    # -- orders
    def order(self, part, o):
        """o: the order dict (harness.order); must be valid."""
        pt = self.parts.setdefault(part, _Part())
        ms = int(o["placed_at"].timestamp() * 1000)
        m = month_of(ms, self.p.tz)
        if pt.cur is not None:
            assert m >= pt.cur - self.p.window + 1, "the model does not do LATE orders"
            for r in range(pt.cur, m):       # months left behind, oldest first
                self._review(pt, r)
            pt.cur = max(pt.cur, m)
        else:
            pt.cur = m
        ident = (o["customer_id"], o["order_id"])
        if ident in pt.seen:
            return                           # a duplicate: ignored
        pt.seen.add(ident)
        c = self.cust(o["customer_id"])
        mo = c.months.setdefault(m, _Month())
        q = sum(l["quantity"] for l in o["lines"])
        before = mo.qty
        mo.qty = mo.qty + q if o["kind"] == "SALE" else max(0, mo.qty - q)
        if mo.grade is None or c.grade > mo.grade:
            mo.grade = c.grade
        if o["kind"] == "SALE" and c.tier == 0:
            tier = self.p.new_tier
            cap = self.p.compliance.get(c.grade)
            assert not cap or cap >= tier, "the model does not place customers under a cap"
            c.tier, c.first = tier, m
            pt.customers.append(c)
            self._tier_event(c, None, tier, NEW, month=m)
        if c.tier == 0:
            return
        if mo.te is None:
            mo.te = c.tier
        if o["kind"] != "SALE" or mo.qty <= before:
            return
        eff = self.p.effective_cap(mo.te, m)
        limits = {"WARNING": mo.qty >= -(-9 * eff // 10), "REACHED": mo.qty >= eff,
                  "EXCEEDED": mo.qty > eff,
                  "HARD_CAP_EXCEEDED": mo.qty > self.p.hard_cap(c.fmt)}
        for kind in KINDS:
            if limits[kind] and kind not in mo.fired:
                mo.fired.add(kind)
                self.quotas["%s:%s:%s" % (c.id, ym(m), kind)] = dict(
                    customer_id=c.id, month=ym(m), tier=mo.te, kind=kind,
                    cap=self.p.cap(mo.te), effective_cap=eff, hard_cap=self.p.hard_cap(c.fmt),
                    consumed=mo.qty, order_id=o["order_id"], placed_at=ms,
                    policy_name=self.p.name, policy_version=self.p.version)

    def _review(self, pt, month):
        """The review of `month` (docs/behaviour.md, "Placement and reviews")
        for every customer of the partition."""
        self.reviews += 1
        p = self.p
        for c in pt.customers:
            win = []
            for x in range(month - p.window + 1, month + 1):
                mo = c.months.get(x)
                qty = mo.qty if mo else 0
                te = mo.te if mo and mo.te is not None else c.tier
                grade = mo.grade if mo and mo.grade is not None else c.grade
                win.append((qty, te, grade))
            total = sum(w[0] for w in win)
            target = p.target(total)
            prev = new = c.tier
            reason = None
            if not c.evaluated and month - c.first + 1 < p.new_months:
                if new != p.new_tier:
                    new, reason = p.new_tier, NEW
            elif not c.evaluated:
                new, reason = target, INIT
                c.evaluated = True
            else:
                up = False
                if target > prev and all(g <= "B" and q >= p.upgrade_qty(te) for q, te, g in win):
                    new, reason, up = prev + 1, UP, True
                if not up and all(q < p.floor(te) for q, te, _g in win):
                    down = max(k for k in range(1, len(p.caps) + 1)
                               if p.floor(k) * p.window <= total)
                    if down < prev:
                        new, reason = down, DOWN
            worst = max(c.grade, win[-1][2])
            cap = p.compliance.get(worst)
            if cap and new > cap:
                new, reason = cap, COMPL
            if new != prev:
                c.tier = new
                self._tier_event(c, prev, new, reason, month=month, total=total)
            nxt = c.months.setdefault(month + 1, _Month())
            nxt.te, nxt.grade = c.tier, c.grade


# ---------------------------------------------------------------- scenario

PROFILE_SCHEMA = avro.schema.parse(open(os.path.join(ROOT, "schemas", "customer_profile.avsc")).read())
FORMATS = ("GROCERY", "CONVENIENCE", "SUPERMARKET", "MALL", "TOBACCO_LIQUOR", "HOSPITALITY", "OTHER")


def profile_value(cid, grade, fmt, updated_ms, cooperation=0.6):
    v = {"customer_id": cid, "format": fmt, "market": "URBAN", "chain": False,
         "compliance_grade": grade, "cooperation": cooperation, "growth": 0.6,
         "tier_override": None,
         "updated_at": dt.datetime.fromtimestamp(updated_ms / 1000, dt.timezone.utc)}
    buf = io.BytesIO()
    avro.io.DatumWriter(PROFILE_SCHEMA).write(v, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def _monthly(rnd, pattern, months):
    """Units a customer aims to buy in each month (None: no order)."""
    if pattern == "high":
        return [rnd.randint(1850, 2400) for _ in range(months)]
    if pattern == "grow":
        q, out = rnd.randint(60, 120), []
        for _ in range(months):
            out.append(min(2600, int(q)))
            q *= rnd.uniform(1.5, 1.9)
        return out
    if pattern == "shrink":
        k = rnd.randint(3, 4)
        return [rnd.randint(1200, 1900) for _ in range(k)] + \
               [rnd.randint(10, 150) for _ in range(months - k)]
    if pattern == "steady":
        lvl = rnd.choice([40, 95, 190, 380, 650, 950, 1400])
        return [max(1, int(lvl * rnd.uniform(0.95, 1.08))) for _ in range(months)]
    if pattern == "late":
        s = rnd.randint(1, 4)
        return [None] * s + [rnd.randint(60, 1200) for _ in range(months - s)]
    if pattern == "gap":
        out = [rnd.randint(90, 900) for _ in range(months)]
        for i in rnd.sample(range(1, months), 2):
            out[i] = None
        return out
    if pattern == "super":
        return [rnd.randint(2500, 5300) for _ in range(months)]
    return [int(10 ** rnd.uniform(0.7, 3.42)) for _ in range(months)]   # random, 5..2600


PATTERNS = ("high", "grow", "shrink", "steady", "late", "gap", "random", "random", "super")


class Scenario:
    """Customers, their initial profiles and their orders over `months`
    calendar months starting at month index `base`, all in the past.
    .orders: [(partition, order dict)] in placed_at order (re-sent
    duplicates inserted a little later); .profiles: [(partition, cid, grade,
    format)] produced before any order."""

    def __init__(self, seed, n_customers, base, months, partition_of, tz=TZ, dup_ratio=0.01):
        rnd = self.rnd = random.Random(seed)
        self.base, self.months, self.tz = base, months, tz
        self.custs = []
        self.profiles = []
        events = []
        for i in range(n_customers):
            pattern = PATTERNS[i % len(PATTERNS)]
            cid = "MM%04d-%s" % (i, pattern[:2].upper())
            part = partition_of(cid)
            fmt = "OTHER"
            if pattern == "super":
                fmt = rnd.choice(("SUPERMARKET", "MALL"))
            elif rnd.random() < 0.4:
                fmt = rnd.choice(FORMATS)
            if fmt != "OTHER" or rnd.random() < 0.2:
                self.profiles.append((part, cid, "B" if rnd.random() < 0.3 else "A", fmt))
            self.custs.append((cid, part, pattern, fmt))
            for k, target in enumerate(_monthly(rnd, pattern, months)):
                if target is None:
                    continue
                events += self._month_orders(rnd, cid, part, base + k, target)
        events.sort(key=lambda e: (e[0], e[2]["order_id"]))
        self.orders = [(part, o) for _t, part, o in events]
        for _ in range(int(len(self.orders) * dup_ratio)):
            i = rnd.randrange(len(self.orders) - 1)
            j = min(len(self.orders), i + rnd.randint(1, 40))
            part, o = self.orders[i]
            if month_of(int(o["placed_at"].timestamp() * 1000), tz) == \
                    month_of(int(self.orders[j - 1][1]["placed_at"].timestamp() * 1000), tz):
                self.orders.insert(j, (part, o))   # the same order again, later

    def _month_orders(self, rnd, cid, part, m, target):
        t0, t1 = month_start(m, self.tz) + 3600_000, month_start(m + 1, self.tz) - 7200_000
        n = max(1, min(target, rnd.randint(1, 5)))
        cuts = sorted(rnd.sample(range(1, target), n - 1)) if n > 1 else []
        parts = [b - a for a, b in zip([0] + cuts, cuts + [target])]
        times = sorted(rnd.randint(t0, t1) for _ in parts)
        out = []
        for k, (t, q) in enumerate(zip(times, parts)):
            out.append((t, part, self._order(rnd, "%s-%s-%d" % (cid, ym(m).replace("-", ""), k),
                                             cid, t, "SALE", q)))
        if rnd.random() < 0.25:           # a return after the month's first sale
            t = rnd.randint(times[0] + 1, t1)
            out.append((t, part, self._order(rnd, "%s-%s-R" % (cid, ym(m).replace("-", "")), cid,
                                             t, "RETURN", rnd.randint(1, max(1, target // 3)))))
        return out

    @staticmethod
    def _order(rnd, oid, cid, t, kind, qty):
        n = max(1, min(qty, rnd.randint(1, 3)))
        cuts = sorted(rnd.sample(range(1, qty), n - 1)) if n > 1 else []
        qs = [b - a for a, b in zip([0] + cuts, cuts + [qty])]
        lines = [{"sku": "SKU-%02d" % rnd.randrange(40), "quantity": x,
                  "unit_price": rnd.randint(500, 60000)} for x in qs]
        return {"order_id": oid, "customer_id": cid,
                "placed_at": dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc),
                "kind": kind, "lines": lines, "currency": "CNY"}

    def month_index(self, o):
        return month_of(int(o["placed_at"].timestamp() * 1000), self.tz)


# -------------------------------------------------------------- comparing

def compare(want, got, topic):
    """Problems, one line each: events missing, unexpected, or with a field
    other than expected (score within 0.006, it travels rounded)."""
    out = []
    for eid in sorted(set(want) - set(got)):
        out.append("%s: missing %s %s" % (topic, eid, _brief(want[eid])))
    for eid in sorted(set(got) - set(want)):
        out.append("%s: unexpected %s %s" % (topic, eid, _brief(got[eid])))
    for eid in sorted(set(want) & set(got)):
        bad = []
        for f, w in want[eid].items():
            g = got[eid].get(f)
            if isinstance(g, dt.datetime):
                g = int(g.timestamp() * 1000)
            if f == "score":
                if g is None or abs(g - w) > 0.006:
                    bad.append((f, w, g))
            elif g != w:
                bad.append((f, w, g))
        if bad:
            out.append("%s: %s: %s" % (topic, eid, ", ".join("%s want %r got %r" % b for b in bad)))
    return out


def _brief(e):
    if "kind" in e:
        return "(tier %s cap %s/%s consumed %s by %s)" % (e.get("tier"), e.get("cap"),
                                                         e.get("effective_cap"), e.get("consumed"),
                                                         e.get("order_id"))
    return "(%s %s->%s %s)" % (e.get("reason"), e.get("previous_tier"), e.get("new_tier"),
                               e.get("review_month"))


def gaps(tier_events):
    """Customers whose sequences are not 1..n."""
    seqs = {}
    for e in tier_events.values():
        seqs.setdefault(e["customer_id"], []).append(e["sequence"])
    return {c: sorted(s) for c, s in seqs.items() if sorted(s) != list(range(1, len(s) + 1))}


def check_published(h, svc, model, daemons=()):
    """Everything the model decided is on the topics, and nothing else:
    each expected event exactly once by event_id with the expected fields,
    every copy of an event_id byte-identical, tier changes 1..n per
    customer.  h is the harness module.  Returns (problems, stats)."""
    h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox to drain", timeout=120,
               daemons=daemons)
    problems, stats = [], {}
    for topic, schema, want in (("tier-changes", "tier_change.avsc", model.tiers),
                                ("quota-events", "quota_event.avsc", model.quotas)):
        recs = h.read_records(svc.bootstrap, topic)
        got, copies, probs = h.group_events(recs, schema)
        problems += probs
        diffs = h.differing_copies(copies, schema)
        if diffs:
            fields = {}
            for _eid, fs in diffs:
                for f in fs:
                    fields[f] = fields.get(f, 0) + 1
            problems.append("%s: %d event_ids published again with other bytes (of %d published "
                            "more than once); fields that differ: %s; e.g. %s" % (
                                topic, len(diffs), sum(len(v) > 1 for v in copies.values()),
                                ", ".join("%s in %d" % kv for kv in sorted(fields.items())),
                                "; ".join("%s %s" % (eid, " ".join(
                                    "%s %s" % (f, "/".join(str(_plain(x)) for x in v))
                                    for f, v in sorted(fs.items()))) for eid, fs in diffs[:3])))
        problems += compare(want, got, topic)
        stats[topic] = (len(recs), len(got), sum(len(v) > 1 for v in copies.values()))
        if topic == "tier-changes":
            for c, s in sorted(gaps(got).items()):
                problems.append("tier-changes: %s sequences %s are not 1..n" % (c, s))
    return problems, stats


def _plain(v):
    return int(v.timestamp() * 1000) if isinstance(v, dt.datetime) else v


def report(h, problems, limit=40):
    """Prints the problems grouped by kind and exits 1 if there are any."""
    import sys
    if not problems:
        return
    h._failed.append("problems")  # keep the run directory
    kinds = {}
    for p in problems:
        topic = p.split(":")[0]
        k = topic + ": " + ("republished with other bytes" if "other bytes" in p else
                            "missing" if ": missing " in p else
                            "unexpected" if ": unexpected " in p else
                            "gap" if "not 1..n" in p else
                            "fields" if topic in ("tier-changes", "quota-events") else "other")
        kinds[k] = kinds.get(k, 0) + 1
    print("\n%d problem(s): %s" % (len(problems), ", ".join("%s %d" % kv for kv in sorted(kinds.items()))))
    for p in problems[:limit]:
        print("  " + p)
    if len(problems) > limit:
        print("  ... %d more" % (len(problems) - limit))
    sys.exit(1)
