#!/usr/bin/env bash
# Prints alerts.yaml as a PrometheusRule (the Prometheus Operator's kind), the production
# overlay's copy of the rules, so that the rules are written once:
#
#   deployments/observability/prometheus-rule.sh > deployments/k8s/overlays/production/prometheus-rule.yaml
set -euo pipefail
cd "$(dirname "$0")"
cat <<'EOF'
# Made from deployments/observability/alerts.yaml by deployments/observability/prometheus-rule.sh:
# edit that file and run this script; tests/observability/check.sh fails when this one is stale.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: ctr
  labels:
    app.kubernetes.io/part-of: ctr
spec:
EOF
grep -v '^#' alerts.yaml | sed 's/^/  /'
