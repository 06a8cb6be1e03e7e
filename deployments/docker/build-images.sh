#!/usr/bin/env bash
# Builds the ctr images without a registry: compiles static binaries here, then wraps each in
# a FROM scratch runtime stage (Dockerfile.prebuilt). Afterwards `docker compose up` starts
# without pulling or building anything.
#
#   deployments/docker/build-images.sh            # tags ctr/<image>:dev
#   CTR_IMAGE_TAG=1.0 deployments/docker/build-images.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

tag="${CTR_IMAGE_TAG:-dev}"
target="$(uname -m)-unknown-linux-gnu"
# package:binary:image:stage
builds=(
    ctr-pki:ctr-pki:pki:service
    order-processing:order-processing:order-processing:service
    coupons:coupons:coupons:service
    points:points:points:service
    payments:payments:payments:service
    dev-issuer:dev-issuer:dev-issuer:service
    ctr-cli:ctr:cli:cli
)

# The relay is built alone: cargo unifies the features of the packages built together, so a
# shared build could switch on in the relay what only an issuer needs. The rest share one
# invocation (and its linking jobs).
compile() { RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" "$@"; }
compile -p order-processing
compile -p ctr-pki -p coupons -p points -p payments -p dev-issuer -p ctr-cli

for build in "${builds[@]}"; do
    IFS=: read -r _ bin name stage <<<"$build"
    image="ctr/${name}:${tag}"
    context="target/images/${name}"
    rm -rf "$context" && mkdir -p "$context/data"
    cp "${CARGO_TARGET_DIR:-target}/${target}/release/${bin}" "$context/"
    docker build --quiet -f deployments/docker/Dockerfile.prebuilt --target "$stage" \
        --build-arg "SERVICE=${bin}" -t "$image" "$context" >/dev/null
    echo "built ${image} ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"
done
