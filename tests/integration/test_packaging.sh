#!/usr/bin/env bash
# The packaging: systemd/ and docker/, checked without systemd as PID 1 and
# without a container engine (this machine has neither).
#
#   systemd   `systemd-analyze verify` on the unit pointed at the built
#             binary; `systemd-analyze security --offline=true` at most 2.0;
#             the unit loads every credential tierd reads; tierd speaks the
#             notify protocol (READY=1, WATCHDOG=1, STOPPING=1) on a socket
#             of ours; a credential in $CREDENTIALS_DIRECTORY is used, never
#             echoed, and a bad one refused.
#   docker    compose.yaml parsed (services, health checks, KRaft, AOF,
#             non-root tierd, config by environment); the topics script run
#             against a stand-in kafka-topics.sh; the Dockerfile's stages,
#             USER and COPY sources; the entrypoint run as a plain command on
#             the built tierd; the healthcheck against a local HTTP server.
#
# usage: test_packaging.sh TIERD_BINARY SOURCE_DIR  (scripts/setup installs the tools)
set -u
tierd=$1
src=$2
max_exposure=2.0
dir=$(mktemp -d /tmp/tierd-packaging-XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$dir"
}
trap cleanup EXIT
fails=0 passes=0
ok() { echo "ok   $1"; passes=$((passes + 1)); }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
expect() { # name condition-status
    if [ "$2" -eq 0 ]; then ok "$1"; else bad "$1"; fi
}

# Debian's python3 (with python3-yaml), as the other tests use.
py=/usr/bin/python3
if ! command -v systemd-analyze >/dev/null; then
    echo "FAIL: systemd-analyze is not installed (scripts/setup installs systemd)"
    exit 1
fi
if ! "$py" -c 'import yaml' 2>/dev/null; then
    echo "FAIL: /usr/bin/python3 with python3-yaml is not installed (scripts/setup installs it)"
    exit 1
fi

unit=$src/systemd/tierd.service
docker=$src/docker

# ---------------------------------------------------------------- systemd --

# verify resolves ExecStart=, so point it at the built binary.  It exits 0
# even on unknown keys or bad values, printing a warning: any line about the
# unit is a failure.
mkdir "$dir/unit"
sed "s|/usr/bin/tierd|$tierd|g" "$unit" >"$dir/unit/tierd.service"
out=$(cd "$dir/unit" && systemd-analyze verify --man=no "$dir/unit/tierd.service" 2>&1)
status=$?
if [ "$status" -ne 0 ] || grep -q 'tierd' <<<"$out"; then
    bad "systemd-analyze verify (status $status): $out"
else
    ok "systemd-analyze verify"
fi

out=$(cd "$dir/unit" && systemd-analyze security --offline=true --no-pager \
      "$dir/unit/tierd.service" 2>&1)
score=$(sed -n 's/.*Overall exposure level for tierd.service: \([0-9.]*\).*/\1/p' <<<"$out")
if [ -z "$score" ]; then
    bad "systemd-analyze security printed no score: $out"
elif "$py" -c "import sys; sys.exit(0 if float('$score') <= $max_exposure else 1)"; then
    ok "systemd-analyze security: exposure $score <= $max_exposure"
else
    bad "systemd-analyze security: exposure $score > $max_exposure"
    grep '✗' <<<"$out"
fi

# What the unit promises, read from the file itself.
has() { grep -Eq "^$1\$" "$unit"; }
has 'Type=notify'; expect "unit: Type=notify" $?
has 'DynamicUser=yes'; expect "unit: DynamicUser=yes" $?
has 'RestartPreventExitStatus=2'; expect "unit: no restart on a refused configuration" $?
# The loop can block up to 120 s (claim retries); the watchdog must be longer.
wd=$(sed -n 's/^WatchdogSec=\([0-9]*\)s\{0,1\}$/\1/p' "$unit")
[ -n "$wd" ] && [ "$wd" -gt 120 ]; expect "unit: WatchdogSec=${wd:-none} > 120 s" $?
! grep -Eiq '^Environment=.*(PASSWORD|SECRET)' "$unit"; expect "unit: no secret in Environment=" $?
# Every credential tierd reads (its own list, from --help-config) is loaded.
creds=$("$tierd" --help-config | sed -n 's/^  \([a-z-]*\) *-> .*/\1/p')
[ -n "$creds" ]; expect "tierd --help-config lists the credentials it reads" $?
for c in $creds; do
    has "LoadCredential=$c"; expect "unit: LoadCredential=$c" $?
done

# The notify protocol, on a socket of ours, as systemd would see it.  Kafka
# and Redis are unreachable (port 1): tierd still serves its loop.
cat >"$dir/notify.py" <<'PY'
import os, signal, socket, subprocess, sys, time
tierd, sockpath, healthcheck = sys.argv[1], sys.argv[2], sys.argv[3]
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sockpath)
s.settimeout(0.2)
env = dict(os.environ, NOTIFY_SOCKET=sockpath, WATCHDOG_USEC="400000",
           TIERD_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", TIERD_REDIS_PORT="1",
           TIERD_REDIS_TIMEOUT_MS="200", TIERD_LOG_LEVEL="error",
           TIERD_HTTP_LISTEN=f"127.0.0.1:{port}")
p = subprocess.Popen([tierd], env=env, stderr=subprocess.DEVNULL)
got, ready_at, sent_term, healthy = [], None, False, None
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        got += s.recv(4096).decode().split("\n")
    except socket.timeout:
        pass
    if ready_at is None and "READY=1" in got:
        ready_at = time.monotonic()
    if ready_at and not sent_term and time.monotonic() - ready_at > 2:
        # The image's probe against the real /healthz, as Docker would run it
        # with TIERD_HTTP_LISTEN=0.0.0.0:PORT.
        healthy = subprocess.run(["bash", healthcheck],
                                 env=dict(os.environ, TIERD_HTTP_LISTEN=f"0.0.0.0:{port}")).returncode
        p.send_signal(signal.SIGTERM)
        sent_term = True
    if sent_term and p.poll() is not None:
        break
else:
    p.kill()
rc = p.wait()
try:
    while True:
        got += s.recv(4096).decode().split("\n")
except (socket.timeout, BlockingIOError):
    pass
pings = got.count("WATCHDOG=1")
print(f"READY={'READY=1' in got} WATCHDOG={pings} STOPPING={'STOPPING=1' in got} exit={rc}"
      f" docker/healthcheck={healthy}")
# 2 s at one ping per 200 ms: about 10; at least 5 leaves room for a slow machine.
sys.exit(0 if "READY=1" in got and pings >= 5 and "STOPPING=1" in got and rc == 0
         and healthy == 0 else 1)
PY
out=$(env -u TIERD_KAFKA_BOOTSTRAP_SERVERS "$py" "$dir/notify.py" "$tierd" "$dir/notify.sock" \
      "$docker/healthcheck" 2>&1)
expect "sd_notify, and the image's healthcheck on tierd's /healthz: $out" $?

# Credentials, as systemd hands them over.
mkdir "$dir/creds"
printf 'hunter2\n' >"$dir/creds/redis-password"
printf 'hunter3' >"$dir/creds/kafka-sasl-password"
out=$(CREDENTIALS_DIRECTORY=$dir/creds TIERD_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \
      "$tierd" --check-config 2>&1)
status=$?
[ "$status" -eq 0 ] && [[ "$out" != *hunter* ]]
expect "credentials accepted and not echoed (status $status)" $?
: >"$dir/creds/redis-password"
out=$(CREDENTIALS_DIRECTORY=$dir/creds TIERD_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \
      "$tierd" --check-config 2>&1)
status=$?
[ "$status" -eq 2 ] && [[ "$out" == *"$dir/creds/redis-password is empty"* ]] &&
    [[ "$out" != *hunter* ]]
expect "an empty credential is refused with its path (status $status)" $?

# ----------------------------------------------------------------- docker --

cat >"$dir/compose_check.py" <<'PY'
# Prints one "ok/FAIL what" line per check of docker/compose.yaml.
import sys, yaml
docker = sys.argv[1]
c = yaml.safe_load(open(f"{docker}/compose.yaml"))
conf = yaml.safe_load(open(f"{docker}/tierd.yaml"))
s = c.get("services", {})
def check(what, cond):
    print(("ok   " if cond else "FAIL ") + "compose: " + what)
def env(svc):
    e = s.get(svc, {}).get("environment", {})
    if isinstance(e, list):
        e = dict(x.split("=", 1) for x in e)
    return {k: str(v) for k, v in e.items()}
for name in ("kafka", "redis", "topics", "tierd"):
    check(f"service {name}", name in s)
for name in ("kafka", "redis", "tierd"):
    hc = s.get(name, {}).get("healthcheck", {})
    check(f"{name} has a health check", bool(hc.get("test")) and not hc.get("disable"))
k, ke = s.get("kafka", {}), env("kafka")
check("kafka is apache/kafka 3.7.x", str(k.get("image", "")).startswith("apache/kafka:3.7."))
roles = set(ke.get("KAFKA_PROCESS_ROLES", "").split(","))
check("kafka in KRaft mode (broker,controller)", roles == {"broker", "controller"})
for v in ("KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_CONTROLLER_LISTENER_NAMES",
          "CLUSTER_ID", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"):
    check(f"kafka sets {v}", bool(ke.get(v)))
check("kafka has no ZooKeeper", not any("ZOOKEEPER" in v for v in ke))
check("kafka advertises kafka:9092 to the compose network",
      "kafka:9092" in ke.get("KAFKA_ADVERTISED_LISTENERS", ""))
rc = s.get("redis", {}).get("command", [])
rc = rc if isinstance(rc, list) else str(rc).split()
check("redis runs with AOF (--appendonly yes)",
      any(rc[i] == "--appendonly" and rc[i + 1] == "yes" for i in range(len(rc) - 1)))
check("redis keeps /data in a volume", any(str(v).endswith(":/data") for v in s.get("redis", {}).get("volumes", [])))
t, te = s.get("tierd", {}), env("tierd")
user = str(t.get("user", "")).split(":")[0]
check("tierd runs as a non-root user", user not in ("", "0", "root"))
check("tierd is built from docker/Dockerfile",
      t.get("build", {}).get("dockerfile") == "docker/Dockerfile")
dep = t.get("depends_on", {})
check("tierd waits for healthy kafka and redis",
      all(dep.get(x, {}).get("condition") == "service_healthy" for x in ("kafka", "redis")))
check("tierd waits for the topics",
      dep.get("topics", {}).get("condition") == "service_completed_successfully")
check("tierd gets the broker from the environment", te.get("TIERD_KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092")
check("tierd gets Redis from the environment", te.get("TIERD_REDIS_HOST") == "redis")
check("tierd listens for health on 0.0.0.0:9464", te.get("TIERD_HTTP_LISTEN") == "0.0.0.0:9464")
check("no secret in tierd's environment",
      not any(("PASSWORD" in v and not v.endswith("_FILE")) or "SECRET" in v for v in te))
check("tierd is given time to stop (stop_grace_period)", bool(t.get("stop_grace_period")))
check("tierd.yaml has no secret",
      "password" not in yaml.dump(conf.get("redis", {})) and
      not any("password" in p for p in conf.get("kafka", {})))
# The topics script, for the next step: compose's $$ is a literal $.
topics = s.get("topics", {})
cmd = topics.get("command", [""])
open(sys.argv[2], "w").write((cmd[0] if isinstance(cmd, list) else cmd).replace("$$", "$"))
want = conf.get("topics", {})
open(sys.argv[3], "w").write("\n".join(sorted(want.values())) + "\n")
PY
"$py" "$dir/compose_check.py" "$docker" "$dir/topics.sh" "$dir/topics.want" >"$dir/compose.out" 2>&1
status=$?
cat "$dir/compose.out"
passes=$((passes + $(grep -c '^ok' "$dir/compose.out")))
fails=$((fails + $(grep -c '^FAIL' "$dir/compose.out")))
[ "$status" -eq 0 ]; expect "compose.yaml parses" $?

# The topics script against a stand-in kafka-topics.sh that logs its calls.
mkdir "$dir/bin"
cat >"$dir/bin/kafka-topics.sh" <<SH
#!/bin/sh
echo "\$*" >>"$dir/topics.log"
SH
chmod +x "$dir/bin/kafka-topics.sh"
sed -i "s|/opt/kafka/bin/kafka-topics.sh|$dir/bin/kafka-topics.sh|g" "$dir/topics.sh"
sh -ec "$(cat "$dir/topics.sh")" >/dev/null 2>&1
expect "topics: the script runs under sh -e" $?
created=$(sed -n 's/.*--create .*--topic \([^ ]*\).*/\1/p' "$dir/topics.log" | sort)
[ "$created" = "$(cat "$dir/topics.want")" ]
expect "topics: creates exactly the topics of docker/tierd.yaml" $?
[ "$(grep -c -- '--create' "$dir/topics.log")" -eq "$(grep -c -- '--partitions 8' "$dir/topics.log")" ]
expect "topics: 8 partitions each (profiles co-partitioned with orders)" $?
grep -- '--topic customer-profiles' "$dir/topics.log" | grep -q 'cleanup.policy=compact'
expect "topics: customer-profiles is compacted" $?
! grep -- '--create' "$dir/topics.log" | grep -vq -- '--if-not-exists'
expect "topics: safe to run again (--if-not-exists)" $?

# The Dockerfile: stages, runtime contents, USER, and COPY sources.
cat >"$dir/dockerfile_check.py" <<'PY'
import os, re, sys
src = sys.argv[1]
lines, buf = [], ""
for raw in open(f"{src}/docker/Dockerfile"):
    line = raw.rstrip("\n")
    if line.lstrip().startswith("#") and not buf:
        continue
    if line.endswith("\\"):
        buf += line[:-1] + " "
        continue
    buf += line
    if buf.strip():
        lines.append(buf.strip())
    buf = ""
stages = []
for l in lines:
    word = l.split()[0].upper()
    if word == "FROM":
        stages.append({"from": l.split()[1], "as": l.split()[3] if len(l.split()) > 3 else None, "lines": []})
    elif stages:
        stages[-1]["lines"].append(l)
def check(what, cond):
    print(("ok   " if cond else "FAIL ") + "Dockerfile: " + what)
check("two stages or more", len(stages) >= 2)
check("every stage FROM debian:bookworm-slim", all(s["from"] == "debian:bookworm-slim" for s in stages))
final = stages[-1]["lines"] if stages else []
users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
check("the final stage has a USER", bool(users))
check("the final USER is not root", bool(users) and users[-1].split(":")[0] not in ("0", "root"))
runs = " ".join(l for l in final if l.upper().startswith("RUN "))
check("no compiler or -dev package at run time",
      not re.search(r"\b(gcc|cmake|make|[a-z0-9.+-]+-dev)\b", runs))
check("the binary comes from the build stage", any(l.startswith("COPY --from=") for l in final))
check("a HEALTHCHECK", any(l.upper().startswith("HEALTHCHECK ") for l in final))
check("the entrypoint is docker/entrypoint",
      any(l.upper().startswith("ENTRYPOINT ") and "docker-entrypoint" in l for l in final) and
      any("docker/entrypoint" in l for l in final))
ignore = [p.strip() for p in open(f"{src}/docker/Dockerfile.dockerignore")
          if p.strip() and not p.startswith("#")]
for s in stages:
    for l in s["lines"]:
        if l.startswith("COPY ") and "--from=" not in l:
            for path in l.split()[1:-1]:
                p = path.rstrip("/")
                check(f"COPY source {p} exists", os.path.exists(f"{src}/{p}"))
                check(f"COPY source {p} is in the build context",
                      f"!{p}" in ignore or any(p.startswith(i[1:] + "/") for i in ignore if i.startswith("!")))
PY
"$py" "$dir/dockerfile_check.py" "$src" >"$dir/dockerfile.out" 2>&1
status=$?
cat "$dir/dockerfile.out"
passes=$((passes + $(grep -c '^ok' "$dir/dockerfile.out")))
fails=$((fails + $(grep -c '^FAIL' "$dir/dockerfile.out")))
[ "$status" -eq 0 ]; expect "Dockerfile parses" $?

# The entrypoint, as a plain command on the built tierd.  The image's paths
# do not exist here, so the policy comes from the environment, as compose
# passes any other key.
ln -s "$tierd" "$dir/bin/tierd"
ep() {
    env -u TIERD_KAFKA_BOOTSTRAP_SERVERS PATH="$dir/bin:$PATH" TIERD_CONFIG="$docker/tierd.yaml" \
        TIERD_POLICY="$src/config/policies/supply-tiers.yaml" "$@"
}
out=$(ep TIERD_REDIS_PASSWORD=hunter2 sh "$docker/entrypoint" --check-config 2>&1)
status=$?
[ "$status" -eq 0 ] && [[ "$out" == *"configuration $docker/tierd.yaml is valid"* ]] &&
    [[ "$out" != *hunter* ]]
expect "entrypoint --check-config: docker/tierd.yaml is valid (status $status): $out" $?
out=$(ep TIERD_REDIS_PORT=seventy sh "$docker/entrypoint" --check-config 2>&1)
status=$?
[ "$status" -eq 2 ] && [[ "$out" == *"environment TIERD_REDIS_PORT"* ]]
expect "entrypoint --check-config: a bad TIERD_* value exits 2 (status $status)" $?
out=$(ep sh "$docker/entrypoint" --check-config -c "$dir/none.yaml" 2>&1)
status=$?
[ "$status" -eq 2 ] && [[ "$out" == *"none.yaml"*"cannot open"* ]]
expect "entrypoint --check-config -c FILE: a missing file exits 2 (status $status)" $?
out=$(ep sh "$docker/entrypoint" --version 2>&1)
[[ "$out" == "tierd "* ]]; expect "entrypoint --version: $out" $?
out=$(ep sh "$docker/entrypoint" echo passed-through 2>&1)
[ "$out" = "passed-through" ]; expect "entrypoint COMMAND runs COMMAND" $?
# Start mode: a refused configuration never starts tierd; a valid one
# execs tierd with -c and the other options in order.  A stand-in tierd
# records how it is started and defers --check-config to the real one.
mkdir "$dir/stub"
cat >"$dir/stub/tierd" <<SH
#!/bin/sh
case "\$1" in --check-config) exec "$tierd" "\$@" ;; esac
echo "started: \$*" >>"$dir/started.log"
SH
chmod +x "$dir/stub/tierd"
out=$(env -u TIERD_KAFKA_BOOTSTRAP_SERVERS PATH="$dir/stub:$PATH" TIERD_CONFIG="$docker/tierd.yaml" \
      TIERD_POLICY="$src/config/policies/supply-tiers.yaml" TIERD_WINDOW_MONTHS=0 \
      sh "$docker/entrypoint" 2>&1)
status=$?
[ "$status" -eq 2 ] && [ ! -e "$dir/started.log" ] && [[ "$out" == *"not starting"* ]]
expect "entrypoint: a refused configuration exits 2 and never starts tierd (status $status)" $?
env -u TIERD_KAFKA_BOOTSTRAP_SERVERS PATH="$dir/stub:$PATH" TIERD_CONFIG="$docker/tierd.yaml" \
    TIERD_POLICY="$src/config/policies/supply-tiers.yaml" \
    sh "$docker/entrypoint" --opt-a -c "$docker/tierd.yaml" --opt-b >/dev/null 2>&1
status=$?
[ "$status" -eq 0 ] && [ "$(cat "$dir/started.log" 2>/dev/null)" = "started: -c $docker/tierd.yaml --opt-a --opt-b" ]
expect "entrypoint: starts tierd -c FILE with the options in order" $?

# The healthcheck against a local HTTP server: 200 is healthy, 503 is not,
# and neither is a port where nothing listens.
cat >"$dir/health_server.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/healthz" and open(sys.argv[1]).read().strip() == "up" else 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok\n" if code == 200 else b"no\n")
    def log_message(self, *a):
        pass
class Quiet(http.server.HTTPServer):
    def handle_error(self, request, client_address):
        pass  # the healthcheck hangs up after the status line
srv = Quiet(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY
echo up >"$dir/state"
"$py" "$dir/health_server.py" "$dir/state" >"$dir/http.port" &
pids+=($!)
for _ in $(seq 50); do [ -s "$dir/http.port" ] && break; sleep 0.1; done
port=$(cat "$dir/http.port")
[ -n "$port" ]; expect "healthcheck: a local HTTP server to ask (port ${port:-none})" $?
TIERD_HTTP_LISTEN=127.0.0.1:$port bash "$docker/healthcheck" 2>/dev/null
expect "healthcheck: 200 on 127.0.0.1:$port is healthy" $?
TIERD_HTTP_LISTEN=0.0.0.0:$port bash "$docker/healthcheck" 2>/dev/null
expect "healthcheck: a wildcard listen address is asked on the loopback" $?
echo down >"$dir/state"
! TIERD_HTTP_LISTEN=127.0.0.1:$port bash "$docker/healthcheck" 2>/dev/null
expect "healthcheck: 503 is unhealthy" $?
kill "${pids[0]}" && wait "${pids[0]}" 2>/dev/null
pids=()
! TIERD_HTTP_LISTEN=127.0.0.1:$port bash "$docker/healthcheck" 2>/dev/null
expect "healthcheck: nothing listening is unhealthy" $?

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
