#!/usr/bin/python3
"""config/alerts/tierd.rules.yml in a real Prometheus (Debian's prometheus)
scraping a real tierd against this test's own broker and Redis.

Prometheus runs on a free loopback port with its storage in the run
directory, scrapes tierd's /metrics every second and evaluates a copy of
the rules every second, with every `for:` set to 0s (the shipped durations
are minutes). Before any order, no quota alert is active. Customer A, new
(tier 2, cap 100 units a month), buys 60 + 60 units this month: the cap
alert turns pending or firing for kind EXCEEDED, and the hard-cap alert
stays silent. Customer B buys 2100 units at once (hard cap 2000): the
hard-cap alert turns active. Prometheus is stopped by its pid at the end,
and on failure with everything else the harness started."""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

import harness as h

RULES = os.path.join(h.ROOT, "config", "alerts", "tierd.rules.yml")
PROMETHEUS = "/usr/bin/prometheus"


class Prometheus:
    """One prometheus process of this test's own, stopped by its pid."""

    def __init__(self, run_dir, tierd_port):
        assert os.access(PROMETHEUS, os.X_OK), (
            "%s missing: install Debian's prometheus (scripts/setup)" % PROMETHEUS)
        self.dir = os.path.join(run_dir, "prometheus")
        os.makedirs(self.dir)
        # The shipped rules with every `for:` at 0s, so an alert is active
        # at its first true evaluation.
        with open(RULES) as f:
            rules = yaml.safe_load(f)
        for g in rules["groups"]:
            for r in g["rules"]:
                if "alert" in r:
                    r["for"] = "0s"
        self.rules = os.path.join(self.dir, "tierd.rules.yml")
        with open(self.rules, "w") as f:
            yaml.safe_dump(rules, f)
        self.cfg = os.path.join(self.dir, "prometheus.yml")
        with open(self.cfg, "w") as f:
            yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                           "scrape_timeout": "1s"},
                "rule_files": [self.rules],
                "scrape_configs": [{"job_name": "tierd", "static_configs": [
                    {"targets": ["127.0.0.1:%d" % tierd_port]}]}],
            }, f)
        check = subprocess.run(["promtool", "check", "config", self.cfg], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        assert check.returncode == 0, check.stdout
        self.logpath = os.path.join(self.dir, "prometheus.log")
        self.proc = None
        h._cleanups.append(self.stop)
        for attempt in range(5):  # the free port may be taken before prometheus binds it
            self.port = h.free_port()
            logf = open(self.logpath, "a")
            self.proc = subprocess.Popen(
                [PROMETHEUS, "--config.file=" + self.cfg,
                 "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                 "--web.listen-address=127.0.0.1:%d" % self.port],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
            logf.close()
            deadline = time.time() + 30
            while time.time() < deadline and self.proc.poll() is None:
                if h.http_get(self.port, "/-/ready", timeout=2)[0] == 200:
                    h.log("prometheus %d up on port %d" % (self.proc.pid, self.port))
                    return
                time.sleep(0.2)
            self.stop()
        raise AssertionError("prometheus did not start; see %s:\n%s" % (
            self.logpath, open(self.logpath).read()[-3000:]))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def api(self, path, **params):
        url = "http://127.0.0.1:%d/api/v1/%s" % (self.port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read().decode())
        assert body["status"] == "success", body
        return body["data"]

    def target_up(self):
        ts = self.api("targets")["activeTargets"]
        return len(ts) == 1 and ts[0]["health"] == "up"

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def alerts(self, name):
        """Active (pending or firing) alerts named `name`."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def evaluations(self):
        """When the tierd rule group was last evaluated (RFC 3339)."""
        gs = [g for g in self.api("rules")["groups"] if g["name"] == "tierd"]
        return gs[0]["lastEvaluation"] if gs else None


def sale(cust, oid, qty):
    o = h.order(oid, cust, h.now_ms() - 60_000, "SALE",
                [{"sku": "SKU-A", "quantity": qty, "unit_price": 1000}])
    return h.Rec(h.partition_of(cust), cust.encode(), h.encode(o), o)


svc = h.Services("alerts")
d = h.Daemon(svc, "a").start()
port = d.http_port()
prom = Prometheus(svc.dir, port)
h.wait_for(prom.target_up, "prometheus to scrape tierd (target up)", daemons=[d])
# A zero sample of the counter before any order, so the first event is an
# increase, and a few evaluations with nothing to say.
h.wait_for(lambda: [r["value"][1] for r in prom.query(
    'tierd_quota_events_total{kind="EXCEEDED"}')] == ["0"],
    "a zero sample of tierd_quota_events_total", daemons=[d])
first = prom.evaluations()
h.wait_for(lambda: prom.evaluations() not in (None, first), "a rule evaluation", daemons=[d])
for name in ("TierdCustomersOverCap", "TierdHardCapBreached", "TierdStateCorrupt"):
    assert prom.alerts(name) == [], (name, prom.alerts(name))
h.log("target up, rules evaluated, no quota alert before any order")

# Customer A: new, so tier 2 (cap 100 a month); 60 + 60 units this month.
h.produce(svc.bootstrap, "orders", [sale("ALERT-A", "ALERT-A-1", 60),
                                    sale("ALERT-A", "ALERT-A-2", 60)])


def over_cap():
    return [a for a in prom.alerts("TierdCustomersOverCap")
            if a["labels"].get("kind") == "EXCEEDED" and a["state"] in ("pending", "firing")]


h.wait_for(over_cap, "TierdCustomersOverCap{kind=EXCEEDED} pending or firing", timeout=90,
           daemons=[d])
a = over_cap()[0]
assert a["labels"]["job"] == "tierd" and a["labels"]["instance"] == "127.0.0.1:%d" % port, a
assert a["labels"]["severity"] == "info", a
assert prom.query('tierd_quota_events_total{kind="EXCEEDED"}')[0]["value"][1] == "1"
assert prom.alerts("TierdHardCapBreached") == [], "120 units are far below the hard cap"
h.log("customer over its cap: TierdCustomersOverCap %s; no hard-cap alert" % a["state"])

# Customer B: 2100 units at once, past the hard cap of 2000.
h.produce(svc.bootstrap, "orders", [sale("ALERT-B", "ALERT-B-1", 2100)])
h.wait_for(lambda: any(x["state"] in ("pending", "firing")
                       for x in prom.alerts("TierdHardCapBreached")),
           "TierdHardCapBreached pending or firing", timeout=90, daemons=[d])
h.log("hard cap passed: TierdHardCapBreached active")

assert prom.alerts("TierdStateCorrupt") == []
prom.stop()
assert d.term() == 0
h.log("PASS")
