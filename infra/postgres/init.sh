#!/bin/sh
# Run once by the postgres image on an empty volume (/docker-entrypoint-initdb.d/): init.sql
# with the passwords from the environment, passed on stdin so no command line shows them.
set -eu
{
  printf '\\set mlflow_password %s\n' "$MLFLOW_DB_PASSWORD"
  printf '\\set feast_password %s\n' "$FEAST_DB_PASSWORD"
  printf '\\set prefect_password %s\n' "$PREFECT_DB_PASSWORD"
  cat /docker-entrypoint-initdb.d/init.sql.in
} | psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres
