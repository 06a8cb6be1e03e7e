#!/usr/bin/env bash
# Starts the host's PostgreSQL (Debian's `postgresql` package) and gives the tests a role
# `ctr` (password `ctr`) that may create databases, and a database `ctr`. Idempotent.
#   deployments/postgres/test-server.sh
#   CTR_TEST_POSTGRES_URL=postgres://ctr:ctr@127.0.0.1:5432/ctr cargo test -p ctr-system-tests
set -euo pipefail
cluster=$(pg_lsclusters --no-header | awk 'NR == 1 {print $1 " " $2}')
if [[ -z "$cluster" ]]; then
    echo "no PostgreSQL cluster: apt-get install postgresql" >&2
    exit 1
fi
# shellcheck disable=SC2086
pg_ctlcluster $cluster start 2>/dev/null || true
as_postgres() { (cd / && su postgres -c "$1"); }
for _ in $(seq 1 30); do as_postgres "psql -qAtc 'SELECT 1'" >/dev/null 2>&1 && break; sleep 1; done
# The system suite runs many services at once, each with a pool of its own (the crash-point
# harness alone starts ten worlds in parallel): more than the default 100 connections.
if (($(as_postgres "psql -qAtc 'SHOW max_connections'") < 500)); then
    as_postgres "psql -qc 'ALTER SYSTEM SET max_connections = 500'"
    # shellcheck disable=SC2086
    pg_ctlcluster $cluster restart
    for _ in $(seq 1 30); do as_postgres "psql -qAtc 'SELECT 1'" >/dev/null 2>&1 && break; sleep 1; done
fi
as_postgres "psql -qAtc \"SELECT 1 FROM pg_roles WHERE rolname = 'ctr'\"" | grep -q 1 ||
    as_postgres "psql -qc \"CREATE ROLE ctr LOGIN PASSWORD 'ctr' CREATEDB\""
as_postgres "psql -qAtc \"SELECT 1 FROM pg_database WHERE datname = 'ctr'\"" | grep -q 1 ||
    as_postgres "psql -qc 'CREATE DATABASE ctr OWNER ctr'"
echo "PostgreSQL ready: postgres://ctr:ctr@127.0.0.1:5432/ctr"
