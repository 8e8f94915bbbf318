#!/bin/sh
# The Prometheus alerting rules (config/alerts/): promtool checks their
# syntax and runs their unit tests (tierd.rules.test.yml), where every alert
# has a case that fires and one that does not. No server: promtool evaluates
# the rules against the series the test file lists.
#
# usage: test_alert_rules.sh SOURCE_DIR
# promtool comes with Debian's prometheus package (scripts/setup). Without it
# the test is reported skipped (exit 77), never passed.
set -eu
dir=$1/config/alerts
if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found (Debian package prometheus, scripts/setup): skipped"
    exit 77
fi
promtool check rules "$dir/tierd.rules.yml"
# promtool resolves rule_files against the test file's directory.
promtool test rules "$dir/tierd.rules.test.yml"
