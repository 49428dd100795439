#!/usr/bin/env bash
# Creates the database of one PostgreSQL container of the stack, owned by a login role of the
# same name, on the FIRST start of the container (files in /docker-entrypoint-initdb.d run only
# when the data volume is empty; to change a password later use ALTER ROLE, or recreate the
# volume). The stack has one such container per service that keeps state:
#   mlflow-postgres   DECFLOW_DB_NAME=mlflow   <- mlflow server   (password MLFLOW_DB_PASSWORD)
#   prefect-postgres  DECFLOW_DB_NAME=prefect  <- prefect server  (password PREFECT_DB_PASSWORD)
# Name and password come from the container environment (infra/.env); they are passed to psql
# as variables and quoted by psql (:"name", :'password'), never pasted into SQL text.
set -euo pipefail

: "${DECFLOW_DB_NAME:?set DECFLOW_DB_NAME (the database and its owner role)}"
: "${DECFLOW_DB_PASSWORD:?set DECFLOW_DB_PASSWORD (infra/.env)}"

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v name="$DECFLOW_DB_NAME" -v password="$DECFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
