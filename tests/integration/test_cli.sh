#!/usr/bin/env bash
# tierd's command line: --check-config accepts a good file, refuses bad ones
# with file, line and reason (exit 2), lets the environment override, never
# echoes a secret; --help and --help-config agree with the docs.
set -u
tierd=$1
# The calling shell's TIERD_* would change every verdict (an unknown one is
# refused): each check sets what it needs.
for v in $(compgen -e | grep '^TIERD_'); do unset "$v"; done
dir=$(mktemp -d /tmp/tierd-cli-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fails=0 passes=0

check() { # name expected-status needle file [env...]
    local name=$1 want=$2 needle=$3 file=$4 out status
    shift 4
    out=$(env "$@" "$tierd" --check-config -c "$file" 2>&1)
    status=$?
    if [ "$status" -ne "$want" ] || [[ "$out" != *"$needle"* ]]; then
        echo "FAIL $name: status $status (want $want), output: $out"
        fails=$((fails + 1))
    else
        echo "ok   $name"
        passes=$((passes + 1))
    fi
    if [[ "$out" == *hunter* ]]; then
        echo "FAIL $name: a secret was printed: $out"
        fails=$((fails + 1))
    fi
}

cat >"$dir/good.yaml" <<'YAML'
kafka:
  bootstrap.servers: 127.0.0.1:9092
  security.protocol: plaintext
topics:
  orders: orders
redis:
  host: 127.0.0.1
  port: 6379
time_zone: Asia/Shanghai
YAML
check good 0 "is valid" "$dir/good.yaml"
check env-password-not-echoed 0 "is valid" "$dir/good.yaml" TIERD_REDIS_PASSWORD=hunter2 TIERD_KAFKA_SASL_PASSWORD=hunter3

printf 'kafka:\n  bootstrap.servers: x:1\nredis:\n  hots: a\n' >"$dir/unknown.yaml"
check unknown-key 2 "unknown.yaml:4: unknown key \"redis.hots\"" "$dir/unknown.yaml"

printf 'kafka:\n  bootstrap.servers: x:1\n  no.such.property: 1\n' >"$dir/kprop.yaml"
check bad-kafka-property 2 "kprop.yaml:3: kafka.no.such.property" "$dir/kprop.yaml" TIERD_REDIS_PASSWORD=hunter2

# librdkafka's refusals when the clients are created, not only when a
# property is set, with the property's place.
printf 'kafka:\n  bootstrap.servers: x:1\n  security.protocol: sasl_plaintext\n  sasl.mechanisms: BOGUS\n' \
    >"$dir/sasl.yaml"
check kafka-sasl-mechanism 2 "sasl.yaml:4: kafka.sasl.mechanisms: kafka producer: Unsupported SASL mechanism: BOGUS" \
    "$dir/sasl.yaml"
check kafka-sasl-mechanism-env 2 "environment TIERD_KAFKA_SASL_MECHANISMS: kafka.sasl.mechanisms:" \
    "$dir/sasl.yaml" TIERD_KAFKA_SASL_MECHANISMS=NOPE
printf 'kafka:\n  bootstrap.servers: x:1\n  security.protocol: ssl\n  ssl.ca.location: %s/no-ca.pem\n' \
    "$dir" >"$dir/ssl.yaml"
check kafka-ssl-ca 2 "ssl.yaml:4: kafka.ssl.ca.location:" "$dir/ssl.yaml"
# The clients are built as tierd builds them: it fixes acks=all on its
# producer, so acks: 1 next to enable.idempotence is no conflict.
printf 'kafka:\n  bootstrap.servers: x:1\n  acks: 1\n  enable.idempotence: true\n' >"$dir/acks.yaml"
check kafka-fixed-acks 0 "is valid" "$dir/acks.yaml"
# Nothing connects: an address that never answers does not slow the check.
printf 'kafka:\n  bootstrap.servers: 192.0.2.1:9092\n' >"$dir/far.yaml"
started=$(date +%s%N)
check kafka-no-connection 0 "is valid" "$dir/far.yaml"
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
if [ "$elapsed_ms" -gt 3000 ]; then
    echo "FAIL kafka-no-connection: --check-config took $elapsed_ms ms"; fails=$((fails + 1))
fi

printf 'kafka:\n  bootstrap.servers: x:1\ntime_zone: Asia/Atlantis\n' >"$dir/tz.yaml"
check bad-time-zone 2 "tz.yaml:3: time_zone: time zone \"Asia/Atlantis\" is unknown" "$dir/tz.yaml"
check bad-time-zone-env 2 "environment TIERD_TIME_ZONE: time_zone:" "$dir/good.yaml" \
    TIERD_TIME_ZONE=Mars/Olympus
printf 'kafka:\n  bootstrap.servers: x:1\ncurrency: usd\nlog_level: info\n' >"$dir/cur.yaml"
check bad-currency 2 "cur.yaml:3: currency: \"usd\"" "$dir/cur.yaml"
printf 'kafka:\n  bootstrap.servers: x:1\nlog_level: loud\n' >"$dir/level.yaml"
check bad-log-level 2 "level.yaml:3: log_level: \"loud\"" "$dir/level.yaml"

# A key twice: refused at the second (YAML would keep one in silence).
printf 'kafka:\n  bootstrap.servers: x:1\ncurrency: CNY\nwindow_months: 3\ncurrency: USD\n' \
    >"$dir/dup.yaml"
check duplicate-key 2 "dup.yaml:5: \"currency\" is set twice (first at line 3)" "$dir/dup.yaml"

# A TIERD_* variable that names no key: refused by name.
check unknown-env 2 "environment TIERD_REDIS_HOTS: no such key; did you mean TIERD_REDIS_HOST?" \
    "$dir/good.yaml" TIERD_REDIS_HOTS=10.0.0.1
check known-non-key-env 0 "is valid" "$dir/good.yaml" TIERD_CONFIG="$dir/good.yaml" \
    TIERD_BIN="$tierd" TIERD_FAULT_COMMIT_STALL_FILE=/nonexistent

check env-override-refused 2 "environment TIERD_REDIS_PORT" "$dir/good.yaml" TIERD_REDIS_PORT=seventy
check env-kafka-refused 2 "environment TIERD_KAFKA_ACKS" "$dir/good.yaml" TIERD_KAFKA_ACKS=sometimes

printf 'kafka:\n  bootstrap.servers: x:1\nwindow_months: 99\n' >"$dir/window.yaml"
check out-of-range 2 "window.yaml:3: window_months: 99 is outside 1..24" "$dir/window.yaml"

check missing-file 2 "cannot open" "$dir/none.yaml"

# Refused at --check-config, not later when tierd starts or connects.
check http-listen-name 2 'listen address "localhost:9464"' "$dir/good.yaml" \
    TIERD_HTTP_LISTEN=localhost:9464
check empty-unix-socket 2 "redis.unix_socket: must not be empty" "$dir/good.yaml" \
    TIERD_REDIS_UNIX_SOCKET=

# --help names every option; --help-config lists every key with its env name.
help=$("$tierd" --help)
for opt in --config --check-config --help-config --version; do
    if [[ "$help" != *"$opt"* ]]; then echo "FAIL help lacks $opt"; fails=$((fails + 1)); fi
done
ref=$("$tierd" --help-config)
for key in redis.port TIERD_REDIS_PORT batch.max_orders time_zone TIERD_KAFKA_; do
    if [[ "$ref" != *"$key"* ]]; then echo "FAIL --help-config lacks $key"; fails=$((fails + 1)); fi
done

# tierd's own deadline on SIGTERM must end before systemd's kills it.
unit=$(dirname "$0")/../../systemd/tierd.service
stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\?$/\1/p' "$unit")
shutdown_ms=$(printf '%s\n' "$ref" | awk '$1 == "shutdown_timeout_ms" {print $3}')
if [ -z "$stop_s" ] || [ -z "$shutdown_ms" ] || [ "$shutdown_ms" -ge $((stop_s * 1000)) ]; then
    echo "FAIL shutdown_timeout_ms default ($shutdown_ms ms) is not below TimeoutStopSec ($stop_s s)"
    fails=$((fails + 1))
fi

# Every TIERD_* variable the repository's own scripts, tests and images read
# or set is one tierd takes (a key, a librdkafka property, or one of the
# names it lets by): exported in an operator's shell, it must not stop
# tierd.  test_cli.sh and test_config.c set refused names on purpose.
src=$(cd "$(dirname "$0")/../.." && pwd)
if [ ! -e "$src/.ci/run" ] || [ ! -d "$src/docker" ] || [ ! -e "$src/scripts/services" ]; then
    # The container image's build runs the unit tests on the parts of the
    # tree it copies; the suite runs this check on the whole checkout.
    echo "skip the TIERD_* names the repository uses: $src is not a whole checkout"
else
    names=$(cd "$src" && {
        grep -rhoE '\$\{?TIERD_[A-Z0-9_]+' scripts docker .ci tests systemd --exclude=CMakeLists.txt \
            --exclude=test_cli.sh --exclude='*.pyc'
        grep -rhE '(^|[^A-Za-z0-9_.])TIERD_[A-Z0-9_]+=' scripts docker .ci tests systemd \
            --exclude=test_cli.sh --exclude='*.pyc' | grep -v compile_definitions |
            grep -oE '(^|[^A-Za-z0-9_.])TIERD_[A-Z0-9_]+='
        # Python's environ[...] and env={...}, and C's getenv tables: quoted
        grep -rhoE "[\"']TIERD_[A-Z0-9_]+[\"']" scripts docker tests daemon/fault.c \
            --exclude=test_config.c --exclude=test_cli.sh --exclude='*.pyc'
        grep -rhoE 'getenv\("TIERD_[A-Z0-9_]+' daemon tests --exclude=test_config.c
        grep -rhoE 'ENV\{TIERD_[A-Z0-9_]+' CMakeLists.txt tests
    } | grep -oE 'TIERD_[A-Z0-9_]+' | sort -u)
    nnames=0
    for v in $names; do
        out=$(env "$v=1" "$tierd" --check-config -c "$dir/good.yaml" 2>&1)
        nnames=$((nnames + 1))
        if [[ "$out" == *"environment $v: no such key"* || "$out" == *"environment $v: names no"* ||
            "$out" == *"No such configuration property"* ]]; then
            echo "FAIL $v, which the repository uses, stops tierd: $out"
            fails=$((fails + 1))
        fi
    done
    if [ "$nnames" -lt 20 ]; then
        echo "FAIL only $nnames TIERD_* names found in $src"
        fails=$((fails + 1))
    else
        echo "ok   the $nnames TIERD_* names the repository uses are taken"
        passes=$((passes + 1))
    fi
fi

# The docs agree with the binary.  docs/operations.md shows --help as the
# program prints it.  docs/configuration.md's reference is what
# --help-config prints (scripts/config-reference writes it; --check
# compares).
root=$(dirname "$0")/../..
if [[ "$(cat "$root/docs/operations.md")" != *"$help"* ]]; then
    echo "FAIL docs/operations.md lacks tierd --help as printed"; fails=$((fails + 1))
fi
if command -v python3 >/dev/null; then
    if out=$(python3 "$root/scripts/config-reference" --check "$tierd" 2>&1); then
        echo "ok   docs/configuration.md is tierd --help-config"; passes=$((passes + 1))
    else
        echo "FAIL $out"; fails=$((fails + 1))
    fi
else
    echo "skip docs/configuration.md against --help-config: no python3"
fi

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
