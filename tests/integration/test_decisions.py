#!/usr/bin/python3
"""A scripted year of orders and profile changes, and every decision tierd
must publish about it (docs/behaviour.md, policy supply-tiers).

The year is the 12 calendar months (Asia/Shanghai) that end with the current
month, called M0 .. M11 below; they become YYYY-MM when the test runs.  24
customers buy constant, hand-checkable amounts (one order a month, every line
at the same unit price, a fixed number of distinct SKUs).  Every tier change
and every quota event they must cause is written out by hand in TIER and QUOTA
below, derived from docs/behaviour.md and config/policies/README.md ("choices
the rules leave open") -- never from tierd's code or its policy engine.  The
test then streams the year into a real broker, reads tier-changes and
quota-events, and asserts the published set equals the expected set exactly.

    test_decisions.py            the end-to-end run (needs build/tierd)
    test_decisions.py --dry-run  no servers: prints the planned stream and the
                                 expected events for today, checks the
                                 tables against the script and round-trips
                                 the Avro encodings

Customers (p = partition, crc32 % 8 of the id; orders and profiles share it)

  STEADY    p5  steady large buyer: INITIAL_EVALUATION to 4, then +1 per review
                (4->5->6->7->8), each window month >= 90 % of the cap of the
                tier in effect; several quota kinds on one order
  BLOCKQ    p7  upgrade blocked by qty in exactly one month (M4 = 800 < 900):
                no upgrade at the 3 reviews whose window holds M4, then +1 again
  BLOCKG    p6  grade C for one month: COMPLIANCE 6->2 at once, upgrade blocked
                by grade while M4 is in the window, then +1 per review with B
  EXACT90   p4  every window month exactly ceil(0.9 * cap): upgrade allowed
  BELOW90   p7  the same with 629 instead of 630 in one month: no upgrade
  BGRADE    p0  like EXACT90 with grade B all year: B passes the upgrade check
  DOWN      p4  3 months below the floor of tier 5 -> DOWNGRADE to 4, the tier
                whose floor <= qty_avg (220)
  ATFLOOR   p7  months at 399 (below floor 400) broken by months at exactly 400:
                the floor is strict, never 3 below running, no downgrade
  GRADED    p4  grade D -> COMPLIANCE to tier 1 at once; later an override to 5
                under grade D stays on 1 (no event); WARNING on cap 50
  OVR       p6  override 3->6 at once, the same override republished: no event;
                reviews continue from 6
  RETURN    p4  a return after WARNING does not un-fire it; the kind does not
                fire twice; REACHED+EXCEEDED on one later order
  HOLIDAY   p0  the holiday month M8: cap 200 -> effective 260, WARNING at 234,
                REACHED at exactly 260, EXCEEDED at 261 on three orders
  SUPERMKT  p0  SUPERMARKET: 4800 and 5000 do not fire HARD_CAP_EXCEEDED,
                5001 does
  HARDOTH   p1  format OTHER: 2000 does not fire HARD_CAP_EXCEEDED, 2001 does
  SKIP      p2  alone in its partition, no order at all in M5: M4 and M5 are
                reviewed when M6 starts; M5 (qty 0) completes 3 months below
                the floor -> DOWNGRADE 4->3 with review_month M5 (floor 100
                * 3 <= 300: "floor <= qty_avg" inclusive)
  NEWLOW    p1  new in M4: holds at its 1st and 2nd review, INITIAL_EVALUATION
                to T* = 1 at the review of M6
  NEWSAME   p4  new in M5: T* = 2 at the review of M7, no event
  NEWT7     p5  new in M6: INITIAL_EVALUATION 2->7 (not limited to +1) at M8
  NEWLATE   p5  new in M9: only 2 months reviewed, must NOT be evaluated yet
  NEW8      p7  new in M7: INITIAL_EVALUATION 2->8 at M9
  CAPC      p5  grade C from the start: T* = 5 at the initial evaluation is
                capped to 2 -> no event
  NEWRET    p3  new in M4 with a RETURN as its first order (month qty stays 0):
                placed on 2 (NEW_CUSTOMER) in M4, not at its first SALE in M5;
                INITIAL_EVALUATION at the review of M6, the third month from M4
  NEWOVR    p7  profile override 5 before its first order (M4, 10 units a
                month): placed on 5 at once; the reviews of M4 and M5 hold it
                on 5 whatever it buys (the override does not end the new
                period); INITIAL_EVALUATION 5 -> T* = 1 at the review of M6
  NEWOVRC   p5  the same with grade C: placed on 2 (the override capped),
                held on 2 at M4 and M5, INITIAL_EVALUATION 2 -> 1 at M6

Every partition holds customers (p3 only NEWRET, whose first record is the
RETURN); every customer orders on the 1st of M11 (or earlier days of it, see build_plan), so every partition reviews
M10 before the run ends; M11 is never reviewed.

Readings chosen where the rules could be read two ways:
  - the upgrade's 90 % uses the plain cap of the tier in effect, not the
    holiday effective cap; the script never puts a holiday-month quantity
    between the two thresholds, so either reading gives the same events;
  - a profile-driven change (COMPLIANCE or OVERRIDE at once) has
    review_month null (the schema's doc); score and T* are not checked on it;
  - after a mid-month profile change the customer places no more orders in
    that month, so the quota events do not depend on whether the cap of the
    current month moves with it;
  - an override under a grade that caps it below the current tier's change
    (GRADED, D + override 5 while on 1) publishes nothing;
  - grades of months without a profile change are never decisive: a month's
    recorded grade and "the profile's grade now" agree on every review;
  - the first order of a customer whose profile has an override is one
    event, previous tier null: new tier the override (reason OVERRIDE), or
    the grade's cap below it (reason COMPLIANCE), review_month the order's
    month (the last rule that moved the tier names the reason);
  - decided_at (docs/behaviour.md, "Time of decision": deterministic so a
    re-decided event has the same bytes): a placement, the first order's
    placed_at; the review of month k, the first instant of k+1 in the zone
    (Asia/Shanghai); a profile change, its updated_at.
"""
import argparse
import datetime as dt
import io
import os
import sys
import time
from zoneinfo import ZoneInfo

import avro.io
import avro.schema

import harness as h

TZ = "Asia/Shanghai"
ZONE = ZoneInfo(TZ)
HOLIDAY = 8                      # the one holiday month of the year: M8
POLICY_NAME, POLICY_VERSION = "supply-tiers", "decisions-test-1"
SCHEMAS = os.path.join(h.ROOT, "schemas")


def load_schema(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        return avro.schema.parse(f.read())


PROFILE_SCHEMA = load_schema("customer_profile.avsc")
TIER_SCHEMA = load_schema("tier_change.avsc")
QUOTA_SCHEMA = load_schema("quota_event.avsc")

# ---------------------------------------------------------------- the policy
# Our own copy of config/policies/supply-tiers.yaml: the expectations below
# depend on these numbers, not on whatever the shipped file says later.
POLICY = """\
name: {name}
version: "{version}"
description: supply-tiers for test_decisions.py, one holiday month
time_zone: {tz}
window_months: 3
new_customer: {{ months: 3, tier: 2 }}
upgrade: {{ rule: hysteresis, cap_ratio: 0.9, grade_at_least: B, on_order: false }}
downgrade: {{ rule: floor }}
compliance: {{ C: 2, D: 1 }}
quota:
  warning_ratio: 0.9
  holiday_flex: 0.3
  hard_caps: {{ default: 2000, SUPERMARKET: 5000, MALL: 5000 }}
holidays:
  - {{ name: Test holiday, from: {hfrom}, to: {hto} }}
profile_defaults:
  format: OTHER
  market: URBAN
  chain: false
  grade: A
  cooperation: 0.6
  growth: 0.6
score:
  - {{ kind: linear,  metric: qty_avg,   lo: 0,    hi: 2000,  points: 45 }}
  - {{ kind: linear,  metric: avg_price, lo: 5000, hi: 50000, points: 15 }}
  - {{ kind: linear,  metric: skus_avg,  lo: 0,    hi: 40,    points: 15 }}
  - {{ kind: profile, field: cooperation, points: 15 }}
  - {{ kind: profile, field: growth,      points: 10 }}
tiers:
  - {{ tier: 1, min_score: 0,  cap: 50 }}
  - {{ tier: 2, min_score: 20, cap: 100 }}
  - {{ tier: 3, min_score: 30, cap: 200 }}
  - {{ tier: 4, min_score: 40, cap: 400 }}
  - {{ tier: 5, min_score: 50, cap: 700 }}
  - {{ tier: 6, min_score: 60, cap: 1000 }}
  - {{ tier: 7, min_score: 70, cap: 1500 }}
  - {{ tier: 8, min_score: 80, cap: 2000 }}
"""

# Used only by the self-checks of the hand-written tables (check_tables),
# never to derive an expectation.
CAP = {1: 50, 2: 100, 3: 200, 4: 400, 5: 700, 6: 1000, 7: 1500, 8: 2000}
MIN_SCORE = {1: 0, 2: 20, 3: 30, 4: 40, 5: 50, 6: 60, 7: 70, 8: 80}

# ------------------------------------------------------------- the customers
# months: 12 entries, M0..M11.  An int is one SALE of that many units; a list
# is several orders on consecutive days (1st, 2nd, ...), a negative number
# being a RETURN of that many units; None is no order that month.
# Every SALE has `skus` lines (S01..Snn) at `price`: S01 carries qty-(skus-1)
# units, the others one each, so a month's qty is the number written here,
# its amount qty * price and its distinct SKUs `skus`.
# profile: fields of the profile produced before the year starts (None: the
# customer never gets one then and uses the policy defaults).
# changes: (month, day, fields) profile records produced mid-month, each the
# previous profile with `fields` changed; produced once every order placed
# before it has been applied, and applied before any later order is produced.

DEFAULTS = dict(format="OTHER", market="URBAN", chain=False, grade="A", cooperation=0.6,
                growth=0.6, override=None)
TOP = dict(cooperation=1.0, growth=1.0)   # 25 rating points instead of 15


class Cust:
    def __init__(self, short, cid, price, skus, months, profile=None, changes=()):
        assert len(months) == 12, short
        self.short, self.id, self.price, self.skus = short, cid, price, skus
        self.months, self.profile, self.changes = months, profile, list(changes)
        fmt = dict(DEFAULTS, **(profile or {}))["format"]
        self.hard_cap = 5000 if fmt in ("SUPERMARKET", "MALL") else 2000
        self.partition = h.partition_of(cid)


def m(*spec):
    """months from (count, value) pairs: m((3, 90), (9, 1800))."""
    out = []
    for n, v in spec:
        out += [v] * n
    return out


CUSTOMERS = [
    # Score = 45*qty_avg/2000 + (avg_price-5000)/3000 + 0.375*skus_avg + 15*coop + 10*growth
    # "P55": TOP ratings, price 50000, 40 SKUs: 25 + 15 + 15 = 55 + 0.0225*qty_avg
    # "P40": TOP ratings, price 50000, 1 SKU:  25 + 15 + 0.375 = 40.375 + 0.0225*qty_avg
    # "D30": default ratings, price 50000, 1 SKU: 15 + 15 + 0.375 = 30.375 + 0.0225*qty_avg
    Cust("STEADY", "DEC-STEADY", 50000, 1, m((3, 90), (9, 1800)), profile=TOP),
    Cust("BLOCKQ", "DEC-BLOCKQ", 50000, 40, m((3, 90), (1, 1800), (1, 800), (7, 1800)), profile=TOP),
    Cust("BLOCKG", "DEC-BLOCKG", 50000, 40, m((3, 90), (1, 650), (8, 950)), profile=TOP,
         changes=[(4, 10, dict(grade="C")), (4, 20, dict(grade="B"))]),
    Cust("EXACT90", "DEC-EXACT90", 50000, 40, m((3, 90), (1, 630), (8, 800)), profile=TOP),
    Cust("BELOW90", "DEC-BELOW90", 50000, 40, m((3, 90), (1, 629), (8, 500)), profile=TOP),
    Cust("BGRADE", "DEC-BGRADE", 50000, 40, m((3, 90), (1, 630), (8, 800)),
         profile=dict(TOP, grade="B")),
    Cust("DOWN", "DEC-DOWN", 50000, 40, m((3, 80), (1, 300), (1, 250), (1, 110), (6, 250)),
         profile=TOP),
    Cust("ATFLOOR", "DEC-ATFLOOR", 50000, 40,
         m((3, 80), (2, 399), (1, 400), (2, 399), (4, 400)), profile=TOP),
    Cust("GRADED", "DEC-GRADED", 50000, 1, m((6, 80), (1, 45), (5, 40)),
         changes=[(5, 10, dict(grade="D")), (8, 10, dict(override=5))]),
    Cust("OVR", "DEC-OVR", 50000, 1, m((5, 80), (7, 720)),
         changes=[(4, 10, dict(override=6)), (5, 10, dict())]),   # 2nd: republished as is
    Cust("RETURN", "DEC-RETURN", 50000, 1, [[95, -20, 20, 10]] + m((2, 80), (9, 120))),
    Cust("HOLIDAY", "DEC-HOLIDAY", 50000, 1, m((3, 80), (5, 150), (1, [250, 10, 1]), (3, 150))),
    Cust("SUPERMKT", "DEC-SUPERMKT", 50000, 1,
         m((3, 80), (1, 4800), (1, 120), (1, [5000, 1]), (6, 120)),
         profile=dict(format="SUPERMARKET")),
    Cust("HARDOTH", "DEC-HARDOTH", 50000, 1, m((3, 80), (3, 120), (1, [2000, 1]), (5, 120))),
    # default ratings, price 50000, 40 SKUs: 15 + 15 + 15 = 45 + 0.0225*qty_avg
    Cust("SKIP", "DEC-SKIP", 50000, 40, m((3, 80), (2, 150), (1, None), (6, 150))),
    # default ratings, price 5000, 1 SKU: 15.375 + 0.0225*qty_avg
    Cust("NEWLOW", "DEC-NEWLOW", 5000, 1, m((4, None), (8, 40))),
    # default ratings, price 20000 (5 points), 1 SKU: 20.375 + 0.0225*qty_avg
    Cust("NEWSAME", "DEC-NEWSAME", 20000, 1, m((5, None), (7, 60))),
    Cust("NEWT7", "DEC-NEWT7", 50000, 40, m((6, None), (6, 800)), profile=TOP),
    Cust("NEWLATE", "DEC-NEWLATE", 50000, 40, m((9, None), (3, 80)), profile=TOP),
    Cust("NEW8", "DEC-NEW8", 50000, 40, m((7, None), (5, 1200)), profile=TOP),
    Cust("CAPC", "DEC-CAPC", 50000, 40, m((12, 80)), profile=dict(TOP, grade="C")),
    # default ratings, price 5000 (0 points), 1 SKU in SALE months: 15 + 0.0225*qty_avg
    # + 0.375*skus_avg.  A RETURN counts no SKU and leaves its month at qty 0.
    Cust("NEWRET", "DEC-NEWRET", 5000, 1, m((4, None), (1, -10), (7, 40))),
    Cust("NEWOVR", "DEC-NEWOVR", 5000, 1, m((4, None), (8, 10)), profile=dict(override=5)),
    Cust("NEWOVRC", "DEC-NEWOVRC", 5000, 1, m((4, None), (8, 10)),
         profile=dict(override=5, grade="C")),
]
BY_SHORT = {c.short: c for c in CUSTOMERS}

# ------------------------------------------------------ expected tier changes
# (customer, sequence, reason, previous, new, when, T*, score)
#   when "Mk": review_month = month k (the reviewed month; for the placement --
#              the first event, previous None -- the month of the first order)
#   when "@k": applied at once on the (first) profile change of month k;
#              review_month null
#   T*, score: None = not checked (no review behind the event).  Scores are
#   written unrounded; the event's 2-decimal score must be within 0.006.
# Tier in effect (TE) of month k = tier held when k began; thresholds used:
#   cap 50 100 200 400 700 1000 1500 2000 (tiers 1..8), floor = cap below,
#   upgrade/warning qty = ceil(0.9*cap): 45 90 180 360 630 900 1350 1800.
NEW, INIT, UP, DOWNG, COMPL, OVERR = ("NEW_CUSTOMER", "INITIAL_EVALUATION", "UPGRADE",
                                      "DOWNGRADE", "COMPLIANCE", "OVERRIDE")
TIER = [
    # STEADY (P40): 90,90,90 then 1800 a month.
    ("STEADY", 1, NEW, None, 2, "M0", None, None),
    ("STEADY", 2, INIT, 2, 4, "M2", 4, 42.4),      # 40.375 + 0.0225*90 = 42.4
    ("STEADY", 3, UP, 4, 5, "M3", 5, 55.225),      # M1 90>=90 M2 90>=90 M3 1800>=360; avg 660 -> +14.85
    ("STEADY", 4, UP, 5, 6, "M4", 6, 68.05),       # 90/TE2 1800/TE4 1800/TE5(630); avg 1230 -> +27.675
    ("STEADY", 5, UP, 6, 7, "M5", 8, 80.875),      # 1800 x3 (TE 4,5,6); avg 1800 -> +40.5; T*8 but +1 only
    ("STEADY", 6, UP, 7, 8, "M6", 8, 80.875),      # TE 5,6,7 (1800 >= 1350); M7..M10: T = T* = 8, hold
    # BLOCKQ (P55): 90,90,90,1800,800,1800...
    ("BLOCKQ", 1, NEW, None, 2, "M0", None, None),
    ("BLOCKQ", 2, INIT, 2, 5, "M2", 5, 57.025),    # 55 + 2.025
    ("BLOCKQ", 3, UP, 5, 6, "M3", 6, 69.85),       # 90,90,1800>=630; avg 660 -> 55+14.85
    # M4: 800 < 900 (TE6).  Reviews M4 (T*7: avg 896.67 -> 75.18), M5 (T*8), M6 (T*8): blocked by QTY
    ("BLOCKQ", 4, UP, 6, 7, "M7", 8, 95.5),        # M5,M6,M7 1800 >= 900 (TE6); 55 + 40.5
    ("BLOCKQ", 5, UP, 7, 8, "M8", 8, 95.5),        # M8 TE7: 1800 >= 1350 (and >= 1755 holiday)
    # BLOCKG (P55): 90,90,90,650, then 950; grade C on the 10th of M4, B on the 20th.
    ("BLOCKG", 1, NEW, None, 2, "M0", None, None),
    ("BLOCKG", 2, INIT, 2, 5, "M2", 5, 57.025),
    ("BLOCKG", 3, UP, 5, 6, "M3", 6, 61.225),      # 90,90,650>=630; avg 276.67 -> 55+6.225
    ("BLOCKG", 4, COMPL, 6, 2, "@4", None, None),  # grade C: at most tier 2, at once
    # Reviews M4, M5, M6: T*6/7 > 2 but M4's grade is C -> blocked by GRADE (qty was fine)
    ("BLOCKG", 5, UP, 2, 3, "M7", 7, 76.375),      # M5..M7 grade B, 950 >= 90 (TE2); 55 + 21.375
    ("BLOCKG", 6, UP, 3, 4, "M8", 7, 76.375),      # TE 2,2,3: 950 >= 90,90,180
    ("BLOCKG", 7, UP, 4, 5, "M9", 7, 76.375),      # TE 2,3,4
    ("BLOCKG", 8, UP, 5, 6, "M10", 7, 76.375),     # TE 3,4,5: 950 >= 630
    # EXACT90 (P55): 90,90,90,630 = exactly ceil(0.9*cap) of TE 2,2,2,5, then 800.
    ("EXACT90", 1, NEW, None, 2, "M0", None, None),
    ("EXACT90", 2, INIT, 2, 5, "M2", 5, 57.025),
    ("EXACT90", 3, UP, 5, 6, "M3", 6, 61.075),     # 90>=90, 90>=90, 630>=630; avg 270 -> 55+6.075
    # M4: T* 6 = T (avg 506.67 -> 66.4); M5..: T*7 but 800 < 900; 800 >= floor 700
    # BELOW90 (P55): 629 instead of 630 in M3, then 500: blocked (T*6 > 5), never below floor 400.
    ("BELOW90", 1, NEW, None, 2, "M0", None, None),
    ("BELOW90", 2, INIT, 2, 5, "M2", 5, 57.025),
    # BGRADE (P55, grade B all year): as EXACT90.
    ("BGRADE", 1, NEW, None, 2, "M0", None, None),
    ("BGRADE", 2, INIT, 2, 5, "M2", 5, 57.025),
    ("BGRADE", 3, UP, 5, 6, "M3", 6, 61.075),
    # DOWN (P55): 80,80,80,300,250,110, then 250.
    ("DOWN", 1, NEW, None, 2, "M0", None, None),
    ("DOWN", 2, INIT, 2, 5, "M2", 5, 56.8),        # 55 + 0.0225*80
    # M3, M4: windows hold M1/M2 (80 >= floor 50 of TE2): hold
    ("DOWN", 3, DOWNG, 5, 4, "M5", 5, 59.95),      # 300,250,110 < 400; sum 660 = avg 220: floor 200 <= 220 < 400
    # M6, M7: M4/M5 at TE5 fail 630 -> blocked; M8..: 250 < 360 (TE4) blocked, 250 >= floor 200
    # ATFLOOR (P55): 80,80,80,399,399,400,399,399,400...: no 3 months running < 400.
    ("ATFLOOR", 1, NEW, None, 2, "M0", None, None),
    ("ATFLOOR", 2, INIT, 2, 5, "M2", 5, 56.8),
    # GRADED (D30): 80 a month; grade D on the 10th of M5; D + override 5 on the 10th of M8.
    ("GRADED", 1, NEW, None, 2, "M0", None, None),
    ("GRADED", 2, INIT, 2, 3, "M2", 3, 32.175),    # 30.375 + 1.8
    ("GRADED", 3, COMPL, 3, 1, "@5", None, None),  # grade D: tier 1 at once
    # M5: window 80,80,80 < floor 100 but target 2 is not below 1; upgrade blocked by D.
    # M8 override 5 under grade D: capped to 1 = current tier -> nothing.
    # OVR (D30): 80 x5 then 720; override 6 on the 10th of M4, republished on the 10th of M5.
    ("OVR", 1, NEW, None, 2, "M0", None, None),
    ("OVR", 2, INIT, 2, 3, "M2", 3, 32.175),
    ("OVR", 3, OVERR, 3, 6, "@4", None, None),
    # M4: T*3 < 6, M2 80 >= floor 50; M5: M5 720 >= floor 700; M6: M5; M7..: 720 >= 700: hold
    # RETURN (D30): M0 = 95 - 20 + 20 + 10 = 105, then 80, 80, 120...
    ("RETURN", 1, NEW, None, 2, "M0", None, None),
    ("RETURN", 2, INIT, 2, 3, "M2", 3, 32.3625),   # avg (105+80+80)/3 = 88.33 -> +1.9875
    # HOLIDAY (D30): 80,80,80, 150 a month, M8 = 250+10+1
    ("HOLIDAY", 1, NEW, None, 2, "M0", None, None),
    ("HOLIDAY", 2, INIT, 2, 3, "M2", 3, 32.175),
    # SUPERMKT (D30, SUPERMARKET): big months M3 and M5 never make 3 window months >= 90 %.
    ("SUPERMKT", 1, NEW, None, 2, "M0", None, None),
    ("SUPERMKT", 2, INIT, 2, 3, "M2", 3, 32.175),
    ("HARDOTH", 1, NEW, None, 2, "M0", None, None),
    ("HARDOTH", 2, INIT, 2, 3, "M2", 3, 32.175),
    # SKIP (45 + 0.0225*qty_avg): 80,80,80,150,150, nothing in M5, then 150.
    ("SKIP", 1, NEW, None, 2, "M0", None, None),
    ("SKIP", 2, INIT, 2, 4, "M2", 4, 46.8),        # 45 + 1.8
    # M5: 150,150,0 all < floor 200 (TE4); sum 300: floor 100*3 <= 300 -> tier 3.
    # Score: qty 2.25 + price 15 + skus (40+40+0)/3 -> 10 + 15 = 42.25, T*4 = T: no upgrade first.
    ("SKIP", 3, DOWNG, 4, 3, "M5", 4, 42.25),
    # M6: M6 150 >= floor 100 (TE3), blocked (M4 150 < 360); M7..: 150 < 180 blocked
    ("NEWLOW", 1, NEW, None, 2, "M4", None, None),
    ("NEWLOW", 2, INIT, 2, 1, "M6", 1, 16.275),    # 15.375 + 0.0225*40
    ("NEWSAME", 1, NEW, None, 2, "M5", None, None),  # M7: 20.375 + 1.35 = 21.725 -> T* 2: no event
    ("NEWT7", 1, NEW, None, 2, "M6", None, None),
    ("NEWT7", 2, INIT, 2, 7, "M8", 7, 73.0),       # 55 + 0.0225*800; M9, M10: M7/M8 TE2 not below 50
    ("NEWLATE", 1, NEW, None, 2, "M9", None, None),  # reviews M9, M10 hold; M11 never reviewed
    ("NEW8", 1, NEW, None, 2, "M7", None, None),
    ("NEW8", 2, INIT, 2, 8, "M9", 8, 82.0),        # 55 + 0.0225*1200
    ("CAPC", 1, NEW, None, 2, "M0", None, None),   # M2: T*5 (56.8), grade C caps at 2: no change
    # NEWRET: M4 is a RETURN alone (qty 0, no SKU), then 40 a month.
    ("NEWRET", 1, NEW, None, 2, "M4", None, None),  # the RETURN places it; its month is the first
    # M4, M5: new (months 1 and 2), hold 2.  M6 = month 3: 0,40,40: avg 26.67 -> 0.6,
    # skus (0+1+1)/3 -> 0.25: 15.85, T* 1.  M7..: T* 1 = T, no floor below tier 1.
    ("NEWRET", 2, INIT, 2, 1, "M6", 1, 15.85),
    # NEWOVR: override 5 in the profile before the first order, 10 units a month.
    ("NEWOVR", 1, OVERR, None, 5, "M4", None, None),  # new-customer tier 2, override 5: one event
    # M4 (0,0,10) and M5 (0,10,10): new, held on the override 5 -- not judged on
    # M2/M3, months before it existed.  M6: 10,10,10 -> 15 + 0.225 + 0.375 = 15.6, T* 1.
    ("NEWOVR", 2, INIT, 5, 1, "M6", 1, 15.6),
    # NEWOVRC: the same with grade C: the override 5 capped to 2 at once.
    ("NEWOVRC", 1, COMPL, None, 2, "M4", None, None),
    # M4, M5: held on min(override 5, cap 2) = 2, no event.  M6: as NEWOVR, T* 1 <= 2.
    ("NEWOVRC", 2, INIT, 2, 1, "M6", 1, 15.6),
]

# ------------------------------------------------------ expected quota events
# (customer, month, kind, tier in effect, cap, effective cap, consumed, order # in the month)
# effective cap = cap + floor(0.3*cap) in M8 (130 260 520 910 1300 1950 2600), else cap;
# WARNING at ceil(0.9*effective cap), REACHED at it, EXCEEDED above it,
# HARD_CAP_EXCEEDED above 2000 (5000 for SUPERMARKET).
W, R, E, H = "WARNING", "REACHED", "EXCEEDED", "HARD_CAP_EXCEEDED"


def wre(cust, month, tier, cap, eff, consumed, order=1, kinds=(W, R, E)):
    return [(cust, month, k, tier, cap, eff, consumed, order) for k in kinds]


QUOTA = (
    # STEADY: 90 >= 90 on tier 2; 1800 on caps 400..1500 crosses all three; on tier 8
    # 1800 >= 1800 warns, except in the holiday month (warning at 2340).
    wre("STEADY", 0, 2, 100, 100, 90, kinds=[W]) + wre("STEADY", 1, 2, 100, 100, 90, kinds=[W])
    + wre("STEADY", 2, 2, 100, 100, 90, kinds=[W])
    + wre("STEADY", 3, 4, 400, 400, 1800) + wre("STEADY", 4, 5, 700, 700, 1800)
    + wre("STEADY", 5, 6, 1000, 1000, 1800) + wre("STEADY", 6, 7, 1500, 1500, 1800)
    + wre("STEADY", 7, 8, 2000, 2000, 1800, kinds=[W])
    + wre("STEADY", 9, 8, 2000, 2000, 1800, kinds=[W])
    + wre("STEADY", 10, 8, 2000, 2000, 1800, kinds=[W])
    + wre("STEADY", 11, 8, 2000, 2000, 1800, kinds=[W])
    # BLOCKQ: M4 800 < 900 fires nothing; M8 tier 7 holiday: 1755 <= 1800 < 1950.
    + wre("BLOCKQ", 0, 2, 100, 100, 90, kinds=[W]) + wre("BLOCKQ", 1, 2, 100, 100, 90, kinds=[W])
    + wre("BLOCKQ", 2, 2, 100, 100, 90, kinds=[W])
    + wre("BLOCKQ", 3, 5, 700, 700, 1800)
    + wre("BLOCKQ", 5, 6, 1000, 1000, 1800) + wre("BLOCKQ", 6, 6, 1000, 1000, 1800)
    + wre("BLOCKQ", 7, 6, 1000, 1000, 1800)
    + wre("BLOCKQ", 8, 7, 1500, 1950, 1800, kinds=[W])
    + wre("BLOCKQ", 9, 8, 2000, 2000, 1800, kinds=[W])
    + wre("BLOCKQ", 10, 8, 2000, 2000, 1800, kinds=[W])
    + wre("BLOCKQ", 11, 8, 2000, 2000, 1800, kinds=[W])
    # BLOCKG: M3 650 on 700 (warn 630); M4 950 on 1000 before the grade change;
    # from M5 on tier 2 again: 950 crosses all until tier 6 in M11.
    + wre("BLOCKG", 0, 2, 100, 100, 90, kinds=[W]) + wre("BLOCKG", 1, 2, 100, 100, 90, kinds=[W])
    + wre("BLOCKG", 2, 2, 100, 100, 90, kinds=[W])
    + wre("BLOCKG", 3, 5, 700, 700, 650, kinds=[W]) + wre("BLOCKG", 4, 6, 1000, 1000, 950, kinds=[W])
    + wre("BLOCKG", 5, 2, 100, 100, 950) + wre("BLOCKG", 6, 2, 100, 100, 950)
    + wre("BLOCKG", 7, 2, 100, 100, 950) + wre("BLOCKG", 8, 3, 200, 260, 950)
    + wre("BLOCKG", 9, 4, 400, 400, 950) + wre("BLOCKG", 10, 5, 700, 700, 950)
    + wre("BLOCKG", 11, 6, 1000, 1000, 950, kinds=[W])
    # EXACT90 / BGRADE: 90 on 100 and 630 on 700 warn exactly; 800 on 1000 (warn 900) nothing.
    + wre("EXACT90", 0, 2, 100, 100, 90, kinds=[W]) + wre("EXACT90", 1, 2, 100, 100, 90, kinds=[W])
    + wre("EXACT90", 2, 2, 100, 100, 90, kinds=[W]) + wre("EXACT90", 3, 5, 700, 700, 630, kinds=[W])
    + wre("BGRADE", 0, 2, 100, 100, 90, kinds=[W]) + wre("BGRADE", 1, 2, 100, 100, 90, kinds=[W])
    + wre("BGRADE", 2, 2, 100, 100, 90, kinds=[W]) + wre("BGRADE", 3, 5, 700, 700, 630, kinds=[W])
    # BELOW90: 629 < 630 does not warn either.
    + wre("BELOW90", 0, 2, 100, 100, 90, kinds=[W]) + wre("BELOW90", 1, 2, 100, 100, 90, kinds=[W])
    + wre("BELOW90", 2, 2, 100, 100, 90, kinds=[W])
    # GRADED: tier 1 (cap 50) from M6: 45 >= 45 warns; M7.. 40 (M8: warning at 59) nothing.
    + wre("GRADED", 6, 1, 50, 50, 45, kinds=[W])
    # RETURN, M0: order 1 SALE 95 warns; order 2 RETURN 20 -> 75 (the warning stays);
    # order 3 SALE 20 -> 95 (already warned); order 4 SALE 10 -> 105: REACHED and EXCEEDED.
    + wre("RETURN", 0, 2, 100, 100, 95, order=1, kinds=[W])
    + wre("RETURN", 0, 2, 100, 100, 105, order=4, kinds=[R, E])
    # HOLIDAY, M8 on tier 3: effective 200 + 60 = 260, warning ceil(234) = 234.
    + wre("HOLIDAY", 8, 3, 200, 260, 250, order=1, kinds=[W])
    + wre("HOLIDAY", 8, 3, 200, 260, 260, order=2, kinds=[R])
    + wre("HOLIDAY", 8, 3, 200, 260, 261, order=3, kinds=[E])
    # SUPERMKT on tier 3: 4800 and 5000 are not above 5000; 5001 is.
    + wre("SUPERMKT", 3, 3, 200, 200, 4800) + wre("SUPERMKT", 5, 3, 200, 200, 5000, order=1)
    + wre("SUPERMKT", 5, 3, 200, 200, 5001, order=2, kinds=[H])
    # HARDOTH on tier 3: 2000 is not above 2000; 2001 is.
    + wre("HARDOTH", 6, 3, 200, 200, 2000, order=1)
    + wre("HARDOTH", 6, 3, 200, 200, 2001, order=2, kinds=[H])
    # NEWT7 / NEW8 on the new-customer tier 2 (M8: effective 130, warning 117).
    + wre("NEWT7", 6, 2, 100, 100, 800) + wre("NEWT7", 7, 2, 100, 100, 800)
    + wre("NEWT7", 8, 2, 100, 130, 800)
    + wre("NEW8", 7, 2, 100, 100, 1200) + wre("NEW8", 8, 2, 100, 130, 1200)
    + wre("NEW8", 9, 2, 100, 100, 1200)
    # No quota event at all: DOWN, ATFLOOR, OVR, SKIP, NEWLOW, NEWSAME, NEWLATE, CAPC,
    # NEWRET (40 < 90 on 2, < 45 on 1), NEWOVR (10 on 5 then 1), NEWOVRC (10 on 2 then 1);
    # NEWT7 from M9 (800 on tier 7), NEW8 from M10 (1200 on tier 8).
)

# ------------------------------------------------------------------ months


def ym(mi):
    return "%04d-%02d" % (mi // 12, mi % 12 + 1)


def local_ms(mi, day, hour, minute=0, second=0):
    t = dt.datetime(mi // 12, mi % 12 + 1, day, hour, minute, second, tzinfo=ZONE)
    return int(t.timestamp() * 1000)


def utc(ms):
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


def to_ms(t):
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(milliseconds=1)


def order_id(c, mi, k):
    return "%s-%s-%d" % (c.id, ym(mi).replace("-", ""), k)


def policy_text(base):
    hm = base + HOLIDAY
    return POLICY.format(name=POLICY_NAME, version=POLICY_VERSION, tz=TZ,
                         hfrom="%s-10" % ym(hm), hto="%s-12" % ym(hm))


# ------------------------------------------------------------------ the plan

class Item:
    """One record of the stream: an order or a profile."""
    __slots__ = ("t", "kind", "cust", "month", "k", "qty", "value", "record", "rec")

    def __init__(self, t, kind, cust, month, k, qty, record):
        self.t, self.kind, self.cust, self.month, self.k = t, kind, cust, month, k
        self.qty, self.record, self.rec = qty, record, None


def make_order(c, mi, k, qty, t):
    if qty < 0:
        kind, lines = "RETURN", [{"sku": "S01", "quantity": -qty, "unit_price": c.price}]
    else:
        assert qty >= c.skus, (c.short, mi, qty)
        kind = "SALE"
        lines = [{"sku": "S%02d" % (i + 1), "quantity": (qty - (c.skus - 1)) if i == 0 else 1,
                  "unit_price": c.price} for i in range(c.skus)]
    return h.order(order_id(c, mi, k), c.id, t, kind, lines)


def make_profile(c, p, t):
    return {"customer_id": c.id, "format": p["format"], "market": p["market"],
            "chain": p["chain"], "compliance_grade": p["grade"],
            "cooperation": float(p["cooperation"]), "growth": float(p["growth"]),
            "tier_override": p["override"], "updated_at": utc(t)}


def avro_bytes(schema, datum):
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def avro_read(schema, raw):
    """Decodes one value, plain or with the 5-byte Confluent header (an
    event_id or customer_id is never empty, so a plain value never starts
    with a zero byte); refuses trailing bytes."""
    b = raw[5:] if raw[:1] == b"\x00" else raw
    buf = io.BytesIO(b)
    datum = avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(buf))
    assert buf.tell() == len(b), "%d trailing bytes" % (len(b) - buf.tell())
    return datum


def build_plan(base, now):
    """(initial profiles, the year's records in time order).  Orders go on the
    k-th day of their month at 10:00 + one minute per customer, mid-month
    profiles at 12:00 of their day.  M11's orders are squeezed into the time
    already gone by when the month is young, keeping their order."""
    initial, items = [], []
    for slot, c in enumerate(CUSTOMERS):
        prof = dict(DEFAULTS, **(c.profile or {}))
        if c.profile is not None:
            t = local_ms(base, 1, 0) - 86400_000 + slot * 1000
            initial.append(Item(t, "profile", c, None, 0, 0, make_profile(c, prof, t)))
        for rel, spec in enumerate(c.months):
            mi = base + rel
            qtys = [] if spec is None else spec if isinstance(spec, list) else [spec]
            for k, q in enumerate(qtys, 1):
                t = local_ms(mi, k, 10, slot)
                items.append(Item(t, "order", c, rel, k, q, make_order(c, mi, k, q, t)))
        for rel, day, fields in c.changes:
            prof = dict(prof, **fields)
            t = local_ms(base + rel, day, 12, slot)
            items.append(Item(t, "profile", c, rel, 0, 0, make_profile(c, prof, t)))
    items.sort(key=lambda it: it.t)
    last = [it for it in items if it.month == 11]
    start = local_ms(base + 11, 1, 0)
    if last and last[-1].t > now - 5000:
        assert now - start >= 30_000, "build_plan needs M11 to be 30 s old"
        step = (now - 5000 - start) // (len(last) + 1)
        for i, it in enumerate(last):
            it.t = start + (i + 1) * step
            it.record = make_order(it.cust, base + 11, it.k, it.qty, it.t)
    for it in items + initial:
        if it.kind == "order":
            it.value = h.encode(it.record)
        else:
            it.value = avro_bytes(PROFILE_SCHEMA, it.record)
    return initial, items


def check_plan(base, now, initial, items):
    """The assumptions the hand-written expectations rest on."""
    errs = []
    for it in items:
        if it.kind == "order" and it.t > now:
            errs.append("order %s is in the future" % it.record["order_id"])
        if h.month_index(it.t, TZ) != base + (it.month if it.month is not None else -1):
            errs.append("%s %s falls outside month M%s" % (it.kind, it.cust.short, it.month))
    for i, it in enumerate(items):
        if it.kind != "profile":
            continue
        if not 0 <= it.month <= 10:
            errs.append("profile change of %s outside M0..M10" % it.cust.short)
        same_part = [o for o in items[:i] if o.kind == "order" and o.month == it.month
                     and o.cust.partition == it.cust.partition]
        if not same_part:
            errs.append("profile of %s in M%d: its partition has no order of that month before it"
                        % (it.cust.short, it.month))
        if any(o.kind == "order" and o.cust is it.cust and o.month == it.month for o in items[i:]):
            errs.append("%s orders after its profile change in M%d" % (it.cust.short, it.month))
    parts = {c.partition for c in CUSTOMERS}
    for p in parts:
        m11 = [it for it in items if it.kind == "order" and it.cust.partition == p and it.month == 11]
        if not m11:
            errs.append("partition %d has no M11 order: M10 would not be reviewed" % p)
    skip = BY_SHORT["SKIP"]
    if [c.short for c in CUSTOMERS if c.partition == skip.partition] != ["SKIP"]:
        errs.append("SKIP must be alone in its partition (months skipped by the whole partition)")
    if len(CUSTOMERS) < 20 or len(parts) < 4:
        errs.append("need >= 20 customers over >= 4 partitions")
    if len({c.id for c in CUSTOMERS}) != len(CUSTOMERS):
        errs.append("duplicate customer id")
    return errs


# ------------------------------------------------------------ expectations

def month_qty_after(c, rel, k):
    """The customer's qty in month M`rel` after its k-th order (returns floor at 0)."""
    spec = c.months[rel]
    qtys = [] if spec is None else spec if isinstance(spec, list) else [spec]
    q = 0
    for x in qtys[:k]:
        q = max(0, q + x)
    return q, (qtys[k - 1] if 0 < k <= len(qtys) else None)


def tier_in_effect(short, rel):
    """From the TIER table alone: the tier the customer held when month M`rel`
    began (the placement counts from its own month; a review of month r and a
    profile change in month r count from r+1; the profile change comes first)."""
    evs = []
    for cust, seq, reason, prev, new, when, _t, _s in TIER:
        if cust != short:
            continue
        k = int(when[1:])
        if prev is None:
            evs.append(((k, 0), new))
        else:
            evs.append(((k + 1, 1 if when[0] == "M" else 0), new))
    evs.sort()
    te = None
    for (start, _), new in evs:
        if start <= rel:
            te = new
    return te


def check_tables():
    """Cross-checks of the hand-written tables against the script and against
    each other, so a typo shows up before the daemon is blamed."""
    errs = []
    seqs = {}
    for row in TIER:
        cust, seq, reason, prev, new, when, target, score = row
        c = BY_SHORT.get(cust)
        if c is None:
            errs.append("TIER: unknown customer %s" % cust)
            continue
        seqs.setdefault(cust, []).append(row)
        k = int(when[1:])
        placement = prev is None
        if (when[0] == "M" and reason in (COMPL, OVERR) and not placement
                or when[0] == "@" and reason not in (COMPL, OVERR)
                or reason == NEW and not placement):
            errs.append("TIER %s %d: %s cannot happen at %s" % (cust, seq, reason, when))
        if when[0] == "@" and k not in [r for r, _d, _f in c.changes]:
            errs.append("TIER %s %d: no profile change in M%d" % (cust, seq, k))
        if when[0] == "M" and reason != NEW and k > 10:
            errs.append("TIER %s %d: M11 is never reviewed" % (cust, seq))
        if placement:
            first = next(i for i, s in enumerate(c.months) if s is not None)
            if when[0] != "M" or k != first:
                errs.append("TIER %s: placed at %s, first order in M%d" % (cust, when, first))
        if (target is None) != (score is None) or (reason in (NEW, COMPL, OVERR)) != (target is None):
            errs.append("TIER %s %d: T*/score only for reviews" % (cust, seq))
        if target is not None and not (MIN_SCORE[target] <= score
                                       and (target == 8 or score < MIN_SCORE[target + 1])):
            errs.append("TIER %s %d: score %s does not give T* %d" % (cust, seq, score, target))
    for cust, rows in seqs.items():
        prev_new = None
        for i, (_, seq, reason, prev, new, *_r) in enumerate(rows):
            if seq != i + 1 or prev != prev_new or new == prev or not 1 <= new <= 8:
                errs.append("TIER %s: sequence %d breaks the chain" % (cust, seq))
            prev_new = new
    seen = set()
    for cust, rel, kind, tier, cap, eff, consumed, k in QUOTA:
        c = BY_SHORT[cust]
        if (cust, rel, kind) in seen:
            errs.append("QUOTA %s M%d %s twice" % (cust, rel, kind))
        seen.add((cust, rel, kind))
        q, this = month_qty_after(c, rel, k)
        if this is None or this < 0:
            errs.append("QUOTA %s M%d %s: order %d is not a SALE" % (cust, rel, kind, k))
        if q != consumed:
            errs.append("QUOTA %s M%d %s: consumed %d, script says %d" % (cust, rel, kind, consumed, q))
        te = tier_in_effect(cust, rel)
        if te != tier:
            errs.append("QUOTA %s M%d %s: tier %s, TIER table says %s" % (cust, rel, kind, tier, te))
        if cap != CAP[tier] or eff != (cap + cap * 3 // 10 if rel == HOLIDAY else cap):
            errs.append("QUOTA %s M%d %s: cap %d/%d wrong for tier %d" % (cust, rel, kind, cap, eff, tier))
        limit = {W: -(-9 * eff // 10), R: eff, E: eff + 1, H: c.hard_cap + 1}[kind]
        before, _ = month_qty_after(c, rel, k - 1)
        if not (before < limit <= q):
            errs.append("QUOTA %s M%d %s: order %d does not cross %d (%d -> %d)"
                        % (cust, rel, kind, k, limit, before, q))
    return errs


def decided_at(c, prev, when, base, items):
    """When a tier change was decided, from its inputs alone (the module
    docstring): the placement at its first order's placed_at, the review of
    month k at the first instant of k+1 (Asia/Shanghai), a profile change at
    its updated_at."""
    k = int(when[1:])
    if prev is None:
        return min(it.t for it in items if it.kind == "order" and it.cust is c)
    if when[0] == "M":
        return local_ms(base + k + 1, 1, 0)
    return min(it.t for it in items if it.kind == "profile" and it.cust is c and it.month == k)


def expected(base, items):
    """{event_id: fields} for both topics, months and order ids made absolute."""
    placed = {it.record["order_id"]: it.t for it in items if it.kind == "order"}
    tiers, quotas = {}, {}
    for cust, seq, reason, prev, new, when, target, score in TIER:
        c = BY_SHORT[cust]
        tiers["%s:tier:%d" % (c.id, seq)] = dict(
            customer_id=c.id, sequence=seq, previous_tier=prev, new_tier=new, reason=reason,
            review_month=ym(base + int(when[1:])) if when[0] == "M" else None,
            target_tier=target, score=score, policy_name=POLICY_NAME,
            policy_version=POLICY_VERSION, decided_at=decided_at(c, prev, when, base, items))
    for cust, rel, kind, tier, cap, eff, consumed, k in QUOTA:
        c = BY_SHORT[cust]
        oid = order_id(c, base + rel, k)
        quotas["%s:%s:%s" % (c.id, ym(base + rel), kind)] = dict(
            customer_id=c.id, month=ym(base + rel), tier=tier, kind=kind, cap=cap,
            effective_cap=eff, hard_cap=c.hard_cap, consumed=consumed, order_id=oid,
            placed_at=placed[oid], policy_name=POLICY_NAME, policy_version=POLICY_VERSION)
    return tiers, quotas


# ------------------------------------------------------------- comparison

def fields_of(datum, want):
    """The fields of a decoded event that the expectation names."""
    out = {}
    for f in want:
        v = datum.get(f)
        if isinstance(v, dt.datetime):
            v = to_ms(v)
        out[f] = v
    return out


def differs(f, want, got):
    if f in ("target_tier", "score") and want is None:
        return False                      # not checked
    if f == "score":
        return got is None or abs(got - want) > 0.006
    return want != got


def compare(exp, act):
    """(missing ids, unexpected ids, {id: [(field, want, got)]})."""
    missing = sorted(set(exp) - set(act))
    unexpected = sorted(set(act) - set(exp))
    wrong = {}
    for eid in sorted(set(exp) & set(act)):
        bad = [(f, w, act[eid].get(f)) for f, w in exp[eid].items() if differs(f, w, act[eid].get(f))]
        if bad:
            wrong[eid] = bad
    return missing, unexpected, wrong


def fmt_tier(e):
    if e is None:
        return "-"
    s = "%s %s->%s %s" % (e["reason"], "none" if e["previous_tier"] is None else e["previous_tier"],
                           e["new_tier"], e["review_month"] or "now")
    if e.get("target_tier") is not None:
        s += " T*%s %.2f" % (e["target_tier"], e["score"] if e["score"] is not None else float("nan"))
    return s


def fmt_quota(e):
    if e is None:
        return "-"
    return "tier %s cap %s/%s hard %s used %s by %s" % (
        e["tier"], e["cap"], e["effective_cap"], e["hard_cap"], e["consumed"],
        (e["order_id"] or "?").split("-", 2)[-1])


def table(exp_t, act_t, exp_q, act_q, only=None):
    """A compact expected-vs-actual table per customer; rows that differ are
    marked '!!'.  only: the customers to print (None: all)."""
    lines = ["  %s %-5s %-26s %-52s | %s" % ("  ", "", "event", "expected", "actual")]
    for c in CUSTOMERS:
        if only is not None and c.id not in only:
            continue
        lines.append("%s (p%d)" % (c.id, c.partition))
        for label, exp, act, fmt, key in (
                ("tier ", exp_t, act_t, fmt_tier, lambda i: int(i.rsplit(":", 1)[1])),
                ("quota", exp_q, act_q, fmt_quota, lambda i: (i.split(":")[1], i.split(":")[2]))):
            ids = sorted({i for i in set(exp) | set(act) if i.split(":")[0] == c.id}, key=key)
            for i in ids:
                w, g = exp.get(i), act.get(i)
                bad = w is None or g is None or any(differs(f, v, g.get(f)) for f, v in w.items())
                lines.append("  %s %s %-26s %-52s | %s" % ("!!" if bad else "  ", label,
                                                          i.split(":", 1)[1], fmt(w), fmt(g)))
    return "\n".join(lines)


def verdict(exp_t, act_t, exp_q, act_q, seqs):
    """Every problem, one line each (empty: pass)."""
    problems = []
    for name, exp, act in (("tier-changes", exp_t, act_t), ("quota-events", exp_q, act_q)):
        missing, unexpected, wrong = compare(exp, act)
        problems += ["%s: missing %s (%s)" % (name, i, (fmt_tier if name[0] == "t" else fmt_quota)(exp[i]))
                     for i in missing]
        problems += ["%s: unexpected %s (%s)" % (name, i, (fmt_tier if name[0] == "t" else fmt_quota)(act[i]))
                     for i in unexpected]
        problems += ["%s: %s: %s" % (name, i, ", ".join("%s want %r got %r" % b for b in bad))
                     for i, bad in wrong.items()]
    for cust, got in sorted(seqs.items()):
        if sorted(got) != list(range(1, len(got) + 1)):
            problems.append("tier-changes: %s sequences %s are not 1..n" % (cust, sorted(got)))
    return problems


# ------------------------------------------------------------ the live run

def wait_field(svc, part, field, at_least, daemon, what, timeout=180):
    key = "tierd:{orders.%d}:meta" % part
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = svc.redis.hget(key, field)
        if v is not None and int(v) >= at_least:
            return
        assert daemon.alive(), "tierd died:\n" + daemon.log_text()[-3000:]
        time.sleep(0.05)
    raise AssertionError("%s: %s %s not >= %d after %ds (is %r)" % (what, key, field, at_least,
                                                                 timeout, svc.redis.hget(key, field)))


def produce_items(svc, topic, its):
    recs = [h.Rec(it.cust.partition, it.cust.id.encode(), it.value) for it in its]
    h.produce(svc.bootstrap, topic, recs)
    for it, r in zip(its, recs):
        it.rec = r


def read_events(bootstrap, topic, schema, want_ids, timeout=120, quiet=5):
    """Every record of `topic` from the beginning, deduplicated by event_id;
    a repeat must be byte-identical.  Reads until every wanted id is in and
    nothing new came for `quiet` seconds, or `timeout`."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "decisions-read-%d" % os.getpid(),
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    got, raw, problems, n = {}, {}, [], 0
    deadline, last = time.time() + timeout, time.time()
    while time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None or msg.error():
            if set(want_ids) <= set(got) and time.time() - last >= quiet:
                break
            continue
        n += 1
        last = time.time()
        try:
            datum = avro_read(schema, msg.value())
        except Exception as e:
            problems.append("%s p%d@%d: not a %s: %s" % (topic, msg.partition(), msg.offset(),
                                                         schema.name, e))
            continue
        eid = datum["event_id"]
        if msg.key() != datum["customer_id"].encode():
            problems.append("%s %s: key %r is not the customer id" % (topic, eid, msg.key()))
        if eid in raw:
            if raw[eid] != (msg.key(), msg.value()):
                problems.append("%s %s: published twice with different bytes" % (topic, eid))
            continue
        raw[eid] = (msg.key(), msg.value())
        got[eid] = datum
    c.close()
    h.log("%s: %d records, %d distinct events" % (topic, n, len(got)))
    return got, problems


def run():
    now = h.now_ms()
    if now - local_ms(h.month_index(now, TZ), 1, 0) < 30_000:
        time.sleep(35)                       # let the current month be 30 s old
        now = h.now_ms()
    base = h.month_index(now, TZ) - 11
    errs = check_tables()
    assert not errs, "the expectation tables are inconsistent:\n  " + "\n  ".join(errs)

    svc = h.Services("decisions")
    policy = os.path.join(svc.dir, "policy-decisions.yaml")
    with open(policy, "w") as f:
        f.write(policy_text(base))
    d = h.Daemon(svc, "decisions", extra={
        "policy": policy,
        "idle_close_after_s": 3600,
        "topics": "{ orders: orders, dead_letter: dead-letter, profiles: customer-profiles, "
                  "tier_changes: tier-changes, quota_events: quota-events }",
    }).start()
    h.log("year %s .. %s, holiday month %s, policy %s" % (ym(base), ym(base + 11), ym(base + HOLIDAY), policy))

    initial, items = build_plan(base, h.now_ms())
    errs = check_plan(base, h.now_ms(), initial, items)
    assert not errs, "the plan breaks its own assumptions:\n  " + "\n  ".join(errs)
    want_t, want_q = expected(base, items)

    # Profiles first: a profile of a customer that never ordered is only read
    # by its first order.
    produce_items(svc, "customer-profiles", initial)
    for p in {it.cust.partition for it in initial}:
        top = max(it.rec.offset for it in initial if it.cust.partition == p)
        wait_field(svc, p, "poffset", top + 1, d, "initial profiles")
    h.log("%d initial profiles applied" % len(initial))

    ends, pending = {}, []

    def flush():
        if not pending:
            return
        produce_items(svc, "orders", pending)
        for it in pending:
            ends[it.cust.partition] = max(ends.get(it.cust.partition, 0), it.rec.offset + 1)
        pending.clear()
        h.wait_drained(svc, ends, daemons=[d])

    for it in items:
        if it.kind == "order":
            pending.append(it)
            continue
        flush()                              # every earlier order applied ...
        produce_items(svc, "customer-profiles", [it])
        wait_field(svc, it.cust.partition, "poffset", it.rec.offset + 1, d,
                   "profile of %s in %s" % (it.cust.id, ym(base + it.month)))  # ... and the profile too
        h.log("profile of %s applied (%s)" % (it.cust.id, ym(base + it.month)))
    flush()
    h.log("the year is applied: %d orders" % sum(1 for it in items if it.kind == "order"))

    act_t, probs_t = read_events(svc.bootstrap, "tier-changes", TIER_SCHEMA, want_t)
    act_q, probs_q = read_events(svc.bootstrap, "quota-events", QUOTA_SCHEMA, want_q)
    dead = sum(h.end_offsets(svc.bootstrap, "dead-letter").values())
    problems = probs_t + probs_q
    if dead:
        problems += ["dead-letter: %s %s" % (hd.get("tierd.reason"), hd.get("tierd.reason_text"))
                     for hd, _k, _v in h.read_dead_letters(svc.bootstrap)]
    seqs = {}
    for eid, e in act_t.items():
        if eid != "%s:tier:%d" % (e["customer_id"], e["sequence"]):
            problems.append("tier-changes: event_id %s does not match %s/%d" % (eid, e["customer_id"], e["sequence"]))
        seqs.setdefault(e["customer_id"], []).append(e["sequence"])
    for eid, e in act_q.items():
        if eid != "%s:%s:%s" % (e["customer_id"], e["month"], e["kind"]):
            problems.append("quota-events: event_id %s does not match its fields" % eid)
    got_t = {i: fields_of(e, want_t.get(i, next(iter(want_t.values())))) for i, e in act_t.items()}
    got_q = {i: fields_of(e, want_q.get(i, next(iter(want_q.values())))) for i, e in act_q.items()}
    problems += verdict(want_t, got_t, want_q, got_q, seqs)

    status = d.term()
    if status != 0:
        problems.append("SIGTERM: tierd exited with %s" % status)
    if problems:
        affected = {c.id for c in CUSTOMERS
                    if any(c.id + ":" in p or c.id + " " in p for p in problems)}
        print("\nexpected | actual, customers with a difference (%d):\n" % len(affected))
        print(table(want_t, got_t, want_q, got_q, only=affected or None))
        print("\n%d problem(s):" % len(problems))
        for p in problems:
            print("  " + p)
        print("\ntierd log (tail):\n" + d.log_text()[-3000:])
        sys.exit(1)
    h.log("%d tier changes and %d quota events exactly as expected" % (len(want_t), len(want_q)))
    h.log("PASS")


# -------------------------------------------------------------- dry run

def dry_run():
    """No servers: the stream as it would be produced now, the expectations,
    the table checks, and Avro round trips of every record and event."""
    now = h.now_ms()
    base = h.month_index(now, TZ) - 11
    initial, items = build_plan(base, max(now, local_ms(base + 11, 1, 0) + 60_000))
    print("year %s .. %s (M0 .. M11), holiday month M%d = %s, now %s"
          % (ym(base), ym(base + 11), HOLIDAY, ym(base + HOLIDAY),
             utc(now).astimezone(ZONE).strftime("%Y-%m-%d %H:%M %Z")))
    print("\n--- policy file ---\n" + policy_text(base))
    try:
        import yaml
        yaml.safe_load(policy_text(base))
    except ImportError:
        pass

    print("--- customers ---")
    for c in CUSTOMERS:
        p = dict(DEFAULTS, **(c.profile or {}))
        print("%-13s p%d price %5d skus %2d %s grade %s coop %.1f growth %.1f%s"
              % (c.id, c.partition, c.price, c.skus, p["format"], p["grade"], p["cooperation"],
                 p["growth"], "" if c.profile is not None else " (no profile: defaults)"))
    print("\n--- stream (local time, partition, record) ---")
    for it in initial:
        print("  before M0 p%d profile %s grade %s" % (it.cust.partition, it.cust.id,
                                                       it.record["compliance_grade"]))
    cur = None
    for it in items:
        if it.month != cur:
            cur = it.month
            print("M%d %s%s" % (cur, ym(base + cur), "  (holiday)" if cur == HOLIDAY else ""))
        when = utc(it.t).astimezone(ZONE).strftime("%d %H:%M:%S")
        if it.kind == "order":
            o = it.record
            print("  %s p%d %-12s %-6s %5d  %s" % (when, it.cust.partition, o["order_id"], o["kind"],
                                                    sum(l["quantity"] for l in o["lines"]),
                                                    "x%d skus" % len(o["lines"]) if len(o["lines"]) > 1 else ""))
        else:
            r = it.record
            print("  %s p%d PROFILE %s grade %s override %s -- wait until applied"
                  % (when, it.cust.partition, it.cust.id, r["compliance_grade"], r["tier_override"]))

    want_t, want_q = expected(base, items)
    print("\n--- expected events ---")
    print(table(want_t, want_t, want_q, want_q))
    print("\n%d tier changes, %d quota events" % (len(want_t), len(want_q)))

    errs = check_tables() + check_plan(base, max(now, local_ms(base + 11, 1, 0) + 60_000), initial, items)
    print("\n--- self-checks ---")
    print("\n".join(errs) if errs else "tables and plan consistent")

    # Avro: orders and profiles decode back to what was built.
    for it in initial + items:
        schema = h.SCHEMA if it.kind == "order" else PROFILE_SCHEMA
        back = avro_read(schema, it.value)
        assert back == it.record, (back, it.record)
        if it.kind == "order":
            assert avro_read(schema, h.encode(it.record, confluent=True)) == it.record
    print("avro: %d orders and %d profiles round-trip" % (sum(it.kind == "order" for it in items),
                                                          sum(it.kind == "profile" for it in initial + items)))

    # The reading and the verdict: events built from the expectations pass,
    # a wrong field, a missing event, an extra one and a sequence gap fail.
    acts = {}
    for name, schema, exp in (("t", TIER_SCHEMA, want_t), ("q", QUOTA_SCHEMA, want_q)):
        got = {}
        for i, e in exp.items():
            datum = fake_event(name, i, e)
            raw = avro_bytes(schema, datum)
            back = avro_read(schema, raw if len(got) % 2 else b"\x00\x00\x00\x00\x07" + raw)
            got[i] = fields_of(back, e)
        acts[name] = got
    seqs = {}
    for e in acts["t"].values():
        seqs.setdefault(e["customer_id"], []).append(e["sequence"])
    assert verdict(want_t, acts["t"], want_q, acts["q"], seqs) == []
    bad_t = dict(acts["t"])
    k1, k2 = sorted(bad_t)[:2]
    bad_t[k1] = dict(bad_t[k1], new_tier=bad_t[k1]["new_tier"] + 1)
    del bad_t[k2]
    bad_q = dict(acts["q"])
    # STEADY must not warn in the holiday month (warning at 2340 > 1800)
    hm = ym(base + HOLIDAY)
    bad_q["DEC-STEADY:%s:WARNING" % hm] = dict(acts["q"]["DEC-STEADY:%s:WARNING" % ym(base + 7)],
                                               month=hm, effective_cap=2600)
    seqs2 = {c: [s for s in v if s != 2] for c, v in seqs.items()}
    probs = verdict(want_t, bad_t, want_q, bad_q, seqs2)
    assert any("missing" in p for p in probs) and any("unexpected" in p for p in probs) \
        and any("want" in p for p in probs) and any("not 1..n" in p for p in probs), probs
    print("verdict: passes on the expected events, reports %d problems on a doctored copy:" % len(probs))
    print(table(want_t, bad_t, want_q, bad_q, only={bad_t[k1]["customer_id"], "DEC-STEADY"}))
    for p in probs[:6]:
        print("  " + p)
    if errs:
        sys.exit(1)


def fake_event(topic, eid, e):
    """A complete Avro datum carrying the expected fields (dry run only)."""
    if topic == "q":
        return dict(e, event_id=eid, placed_at=utc(e["placed_at"]))
    return dict(e, event_id=eid, rule=e["reason"], explain="", score=e["score"],
                components=[], window=[], upgrade_blocked_by=[], classification="QX11",
                decided_at=utc(e["decided_at"]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="print the planned stream and the expected events; no servers")
    args = ap.parse_args()
    if args.dry_run:
        dry_run()
    else:
        run()
