#!/usr/bin/env bash
# The Kubernetes manifests, offline: every overlay rendered with `kubectl kustomize`, validated
# strictly against the Kubernetes 1.33 schemas (PyPI's kubernetes-validate; cert-manager's
# kinds have no schema there and only warn), then checked by check.py for what schemas cannot
# see (probes, disruption budgets, network policies, security contexts, image tags, ...).
#
# Each service's own binary (built here unless CTR_K8S_BINARIES names them) then loads the
# settings its Deployment gives it.
#
#   tests/k8s/validate.sh
set -euo pipefail
binaries="${CTR_K8S_BINARIES:+$(realpath "$CTR_K8S_BINARIES")}"
cd "$(dirname "$0")"
if [[ -z "$binaries" ]]; then
    cargo build --quiet --locked -p order-processing -p coupons -p points -p payments -p dev-issuer
    binaries="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug"
fi
command -v kubectl >/dev/null || { echo "kubectl (with kustomize) is needed" >&2; exit 1; }
venv="${CTR_K8S_VENV:-$PWD/.venv}"
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
fi
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for overlay in ../../deployments/k8s/overlays/*/; do
    name="$(basename "$overlay")"
    kubectl kustomize "$overlay" >"$rendered/$name.yaml"
    "$venv/bin/kubernetes-validate" --strict -k 1.33.0 --quiet "$rendered/$name.yaml"
    echo "overlay $name: $(grep -c '^kind:' "$rendered/$name.yaml") objects valid against Kubernetes 1.33"
done
"$venv/bin/python" check.py --self-test --binaries "$binaries" "$rendered"/*.yaml
