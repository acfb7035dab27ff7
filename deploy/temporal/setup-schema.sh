#!/bin/sh
# Creates the Temporal databases on PostgreSQL and brings their schemas to the
# version of the temporalio/admin-tools image that runs this script (the same
# version as the temporalio/server image). Every step is idempotent, so the
# script runs at every `docker compose up` and upgrades the schema after the
# image tags are raised together.
#
# Without Docker (README, "Running without Docker"): temporal-sql-tool is
# `go install go.temporal.io/server/cmd/tools/sql@v1.32.0` (installed as
# "sql"; put it on PATH under this name) and SCHEMA_DIR is the schema of that
# module, $(go env GOMODCACHE)/go.temporal.io/server@v1.32.0/schema/postgresql/v12.
set -eu

: "${POSTGRES_SEEDS:=postgresql}"
: "${DB_PORT:=5432}"
: "${POSTGRES_USER:=temporal}"
: "${SQL_PASSWORD:?SQL_PASSWORD must be the PostgreSQL password}"
export SQL_PASSWORD

: "${SCHEMA_DIR:=/etc/temporal/schema/postgresql/v12}"
schema=$SCHEMA_DIR
for db in temporal:temporal temporal_visibility:visibility; do
	name=${db%%:*}
	dir=${db##*:}
	temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" --db "$name" create
	temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" --db "$name" setup-schema -v 0.0
	temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" --db "$name" update-schema -d "$schema/$dir/versioned"
done
echo "Temporal schemas are up to date"
