#!/usr/bin/env bash
# Builds the ctr images without a registry: compiles static binaries here, then wraps each in
# the FROM scratch runtime stage (Dockerfile.prebuilt). Afterwards `docker compose up` starts
# without pulling or building anything.
#
#   deployments/docker/build-images.sh            # tags ctr/<image>:dev
#   CTR_IMAGE_TAG=1.0 deployments/docker/build-images.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

tag="${CTR_IMAGE_TAG:-dev}"
target=x86_64-unknown-linux-gnu
bins=(ctr-pki order-processing coupons points payments)

# One cargo invocation per binary: cargo unifies the features of the packages built together,
# so a shared build could switch on in the relay what only an issuer needs.
for bin in "${bins[@]}"; do
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" -p "$bin"
done

for bin in "${bins[@]}"; do
    image="ctr/${bin#ctr-}:${tag}"
    context="target/images/${bin}"
    rm -rf "$context" && mkdir -p "$context/data"
    cp "target/${target}/release/${bin}" "$context/"
    docker build --quiet -f deployments/docker/Dockerfile.prebuilt --build-arg "SERVICE=${bin}" -t "$image" "$context" >/dev/null
    echo "built ${image} ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"
done
