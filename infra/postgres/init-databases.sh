#!/usr/bin/env bash
# Creates the two databases of the stack, each owned by its own login role, on the FIRST start
# of the postgres container (files in /docker-entrypoint-initdb.d run only when the data volume
# is empty; to change a password later use ALTER ROLE, or recreate the volume).
#   mlflow  <- mlflow server   (role mlflow,  password MLFLOW_DB_PASSWORD)
#   prefect <- prefect server  (role prefect, password PREFECT_DB_PASSWORD)
# The passwords come from the container environment (infra/.env); they are passed to psql as
# variables and quoted by psql (:'var'), never pasted into SQL text.
set -euo pipefail

: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD (infra/.env)}"
: "${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD (infra/.env)}"

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" -v prefect_password="$PREFECT_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
SQL
