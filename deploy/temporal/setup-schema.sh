#!/bin/sh
# Creates the Temporal databases on PostgreSQL and brings their schemas to the
# version of the temporalio/admin-tools image that runs this script (the same
# version as the temporalio/server image). Every step is idempotent, so the
# script runs at every `docker compose up` and upgrades the schema after the
# image tags are raised together.
set -eu

: "${POSTGRES_SEEDS:=postgresql}"
: "${DB_PORT:=5432}"
: "${POSTGRES_USER:=temporal}"
: "${SQL_PASSWORD:?SQL_PASSWORD must be the PostgreSQL password}"
export SQL_PASSWORD

schema=/etc/temporal/schema/postgresql/v12
for db in temporal:temporal temporal_visibility:visibility; do
	name=${db%%:*}
	dir=${db##*:}
	temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" --db "$name" create
	temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" --db "$name" setup-schema -v 0.0
	temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" --db "$name" update-schema -d "$schema/$dir/versioned"
done
echo "Temporal schemas are up to date"
