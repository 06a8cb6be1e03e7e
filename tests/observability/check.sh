#!/usr/bin/env bash
# The alert rules, offline: promtool checks them and runs their unit tests (each alert fires on
# series that should fire it and stays silent on a healthy stack), and the production overlay's
# PrometheusRule holds the same rules, and every query of the Grafana dashboard is PromQL that
# promtool accepts. That every ctr_* metric they name is exported is checked by the system suite
# (telemetry::every_metric_the_alert_rules_runbooks_and_dashboard_name_is_exported).
#
#   tests/observability/check.sh      # needs promtool: Debian's `prometheus` package
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v promtool >/dev/null || { echo "promtool is needed (Debian: apt-get install prometheus)" >&2; exit 1; }
promtool check rules deployments/observability/alerts.yaml
promtool test rules deployments/observability/alerts.test.yaml
rule=deployments/k8s/overlays/production/prometheus-rule.yaml
if ! diff -u "$rule" <(deployments/observability/prometheus-rule.sh); then
    echo "$rule is stale: run deployments/observability/prometheus-rule.sh > $rule" >&2
    exit 1
fi
echo "$rule holds the same rules"
# The dashboard's queries, each as a recording rule, so that promtool parses every one.
dashboard=deployments/observability/grafana/dashboards/ctr.json
queries=$(mktemp --suffix=.yaml)
trap 'rm -f "$queries"' EXIT
python3 - "$dashboard" >"$queries" <<'PY'
import json, sys
panels = json.load(open(sys.argv[1]))["panels"]
exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
assert exprs, "the dashboard has no query"
print("groups:\n  - name: dashboard\n    rules:")
for n, expr in enumerate(exprs):
    print(f"      - record: dashboard:query{n}\n        expr: {json.dumps(expr)}")
PY
promtool check rules "$queries" >/dev/null
echo "$dashboard: $(grep -c 'record:' "$queries") queries, each valid PromQL"
