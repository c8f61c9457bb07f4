#!/usr/bin/env bash
# The production profile's servers on loopback, from Debian and PyPI packages (no Docker):
# Postgres (MLflow backend and auth store, Feast registry, a Prefect database), Redis with a
# password (Feast online store) and an MLflow server with basic auth, Postgres backend and
# proxied artifact storage (no MinIO package exists here; compose.yaml has MinIO).
#
#   bash infra/loopback.sh start    # install what is missing (as root), start, wait until ready
#   bash infra/loopback.sh stop     # stop the three servers (state and data are kept)
#   bash infra/loopback.sh status
#   bash infra/loopback.sh purge    # stop and delete the state directory
#
# Idempotent: `start` leaves running servers alone. Secrets are generated on first start into
# $LTV_INFRA_STATE/secrets.env (mode 600, never committed, never printed); `start` writes
# $LTV_INFRA_STATE/ltv-prod.env, which `source` turns into an LTV_ENV=prod shell.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${LTV_INFRA_STATE:-/tmp/ltv-infra}"
PG_PORT="${LTV_INFRA_PG_PORT:-55432}"
REDIS_PORT="${LTV_INFRA_REDIS_PORT:-56379}"
MLFLOW_PORT="${LTV_INFRA_MLFLOW_PORT:-55000}"
MLFLOW_BIN="${LTV_INFRA_MLFLOW_BIN:-$ROOT/.venv/bin/mlflow}"
HOST=127.0.0.1
RUN="$STATE/run"
ENV_FILE="$STATE/ltv-prod.env"

log() { echo "loopback: $*" >&2; }
die() { log "error: $*"; exit 1; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_postgres() { runuser -u postgres -- "$@"; }

wait_for() {  # wait_for WHAT SECONDS COMMAND...: poll until COMMAND succeeds
  local what=$1 seconds=$2
  shift 2
  for _ in $(seq "$((seconds * 2))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what not ready after ${seconds}s (logs in $STATE/*.log)"
}

install_packages() {
  local missing=()
  [ -n "$(pg_bin)" ] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "installing ${missing[*]} needs root"
  log "installing ${missing[*]}"
  # Keep the packages' own services (Postgres on 5432, Redis on 6379) from starting.
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  [ -z "$added" ] || rm -f "$policy"
}

random_secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

load_secrets() {
  if [ ! -s "$STATE/secrets.env" ]; then
    (
      umask 077
      for name in PG_SUPER PG_MLFLOW PG_FEAST PG_PREFECT REDIS MLFLOW_ADMIN FLASK_KEY; do
        echo "${name}_SECRET=$(random_secret)"
      done >"$STATE/secrets.env"
    )
  fi
  # shellcheck disable=SC1091
  source "$STATE/secrets.env"
}

pg_ready() { "$(pg_bin)/pg_isready" -q -h "$HOST" -p "$PG_PORT"; }

psql_admin() {  # SQL on stdin, as the cluster's superuser through its private socket
  as_postgres "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PG_PORT" -d postgres
}

start_postgres() {
  local data="$STATE/postgres" bin
  bin="$(pg_bin)"
  install -d -o postgres -g postgres -m 700 "$data"
  if [ ! -s "$data/PG_VERSION" ]; then
    log "creating a Postgres cluster in $data"
    local pwfile="$RUN/pg-super.pw"
    (umask 077 && echo "$PG_SUPER_SECRET" >"$pwfile") && chown postgres "$pwfile"
    as_postgres "$bin/initdb" -D "$data" -U postgres --pwfile="$pwfile" -E UTF8 --no-locale \
      --auth-local=peer --auth-host=scram-sha-256 >"$STATE/initdb.log"
    rm -f "$pwfile"
  fi
  if ! as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "starting Postgres on $HOST:$PG_PORT"
    touch "$STATE/postgres.log" && chown postgres "$STATE/postgres.log"
    as_postgres "$bin/pg_ctl" -D "$data" -l "$STATE/postgres.log" -w -t 60 -o \
      "-c listen_addresses=$HOST -p $PG_PORT -k $RUN" start >/dev/null
  fi
  wait_for Postgres 60 pg_ready
  # One login per consumer, its password (re)set from secrets.env; databases created once.
  {
    echo "\\set mlflow_password $PG_MLFLOW_SECRET"
    echo "\\set feast_password $PG_FEAST_SECRET"
    echo "\\set prefect_password $PG_PREFECT_SECRET"
    cat "$ROOT/infra/postgres/init.sql"
  } | psql_admin >/dev/null
  # libpq reads the MLflow server's password from here, so it never shows in a command line.
  (umask 077 && echo "$HOST:$PG_PORT:*:mlflow:$PG_MLFLOW_SECRET" >"$STATE/pgpass")
}

redis_ping() {
  [ "$(REDISCLI_AUTH="$REDIS_SECRET" redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
}

start_redis() {
  mkdir -p "$STATE/redis"
  (
    umask 077
    cat >"$STATE/redis.conf" <<CONF
bind $HOST
port $REDIS_PORT
protected-mode yes
requirepass $REDIS_SECRET
daemonize yes
pidfile $RUN/redis.pid
logfile $STATE/redis.log
dir $STATE/redis
appendonly yes
CONF
  )
  if ! redis_ping; then
    log "starting Redis on $HOST:$REDIS_PORT"
    redis-server "$STATE/redis.conf"
  fi
  wait_for Redis 30 redis_ping
}

mlflow_status() {  # the HTTP status of an unauthenticated request to the API
  curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$MLFLOW_PORT/api/2.0/mlflow/experiments/search?max_results=1"
}

mlflow_ready() { [ "$(mlflow_status)" = 401 ]; }

mlflow_up() {  # ready, or fail at once when the server process has exited
  kill -0 "$(cat "$RUN/mlflow.pid")" 2>/dev/null || die "MLflow exited: see $STATE/mlflow.log"
  mlflow_ready
}

start_mlflow() {
  if [ ! -x "$MLFLOW_BIN" ]; then
    log "no $MLFLOW_BIN: installing the project's .venv"
    make -C "$ROOT" install >/dev/null
  fi
  mkdir -p "$STATE/mlartifacts"
  local db="postgresql+psycopg://mlflow@$HOST:$PG_PORT"
  MLFLOW_AUTH_DB_URI="$db/mlflow_auth" "$ROOT/.venv/bin/python" -c \
    'import os, sys; sys.stdout.write(os.path.expandvars(open(sys.argv[1]).read()))' \
    "$ROOT/infra/mlflow/basic_auth.ini" >"$STATE/basic_auth.ini"
  if mlflow_ready; then return 0; fi
  log "starting MLflow (basic auth) on http://$HOST:$MLFLOW_PORT"
  PGPASSFILE="$STATE/pgpass" \
    MLFLOW_AUTH_CONFIG_PATH="$STATE/basic_auth.ini" \
    MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_ADMIN_SECRET" \
    MLFLOW_FLASK_SERVER_SECRET_KEY="$FLASK_KEY_SECRET" \
    setsid "$MLFLOW_BIN" server --app-name basic-auth \
    --backend-store-uri "$db/mlflow" \
    --serve-artifacts --artifacts-destination "$STATE/mlartifacts" \
    --host "$HOST" --port "$MLFLOW_PORT" --workers 2 \
    >"$STATE/mlflow.log" 2>&1 </dev/null &
  echo $! >"$RUN/mlflow.pid"
  wait_for MLflow 120 mlflow_up
}

write_env_file() {
  (
    umask 077
    cat >"$ENV_FILE" <<ENV
# Written by infra/loopback.sh: \`source\` it for an LTV_ENV=prod shell against the loopback servers.
export LTV_ENV=prod
export LTV_MLFLOW__TRACKING_URI=http://$HOST:$MLFLOW_PORT
export MLFLOW_TRACKING_USERNAME=admin
export MLFLOW_TRACKING_PASSWORD=$MLFLOW_ADMIN_SECRET
export LTV_FEAST_PG_HOST=$HOST
export LTV_FEAST_PG_PORT=$PG_PORT
export LTV_FEAST_PG_DB=feast
export LTV_FEAST_PG_USER=feast
export LTV_FEAST_PG_PASSWORD=$PG_FEAST_SECRET
export LTV_REDIS_HOST=$HOST
export LTV_REDIS_PORT=$REDIS_PORT
export LTV_REDIS_PASSWORD=$REDIS_SECRET
# For a Prefect server on the same Postgres (prefect server start) and for checks:
export PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://prefect:$PG_PREFECT_SECRET@$HOST:$PG_PORT/prefect
export LTV_INFRA_MLFLOW_DB=postgresql://mlflow:$PG_MLFLOW_SECRET@$HOST:$PG_PORT/mlflow
ENV
  )
}

stop_all() {
  if [ -s "$RUN/mlflow.pid" ]; then
    local pid
    pid=$(cat "$RUN/mlflow.pid")
    # setsid made the server a process group leader: end it with its workers.
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping MLflow"
      kill -TERM -- "-$pid" 2>/dev/null || true
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/mlflow.pid"
  fi
  if [ -s "$RUN/redis.pid" ] && kill -0 "$(cat "$RUN/redis.pid")" 2>/dev/null; then
    log "stopping Redis"
    kill -TERM "$(cat "$RUN/redis.pid")"
    for _ in $(seq 40); do [ -e "$RUN/redis.pid" ] || break; sleep 0.25; done
  fi
  if [ -s "$STATE/postgres/PG_VERSION" ] &&
    as_postgres "$(pg_bin)/pg_ctl" -D "$STATE/postgres" status >/dev/null 2>&1; then
    log "stopping Postgres"
    as_postgres "$(pg_bin)/pg_ctl" -D "$STATE/postgres" -m fast -w stop >/dev/null
  fi
}

status() {
  local pg=down redis=down mlflow=down
  pg_ready 2>/dev/null && pg=up
  [ -s "$STATE/secrets.env" ] && source "$STATE/secrets.env" && redis_ping && redis=up
  mlflow_ready && mlflow=up
  echo "postgres $HOST:$PG_PORT $pg; redis $HOST:$REDIS_PORT $redis; mlflow http://$HOST:$MLFLOW_PORT $mlflow"
  [ "$pg$redis$mlflow" = upupup ]
}

case "${1:-start}" in
  start)
    install_packages
    install -d -m 755 "$STATE" && chmod 755 "$STATE"  # Postgres runs as its own user
    install -d -o postgres -g postgres -m 755 "$RUN"
    load_secrets
    start_postgres
    start_redis
    start_mlflow
    write_env_file
    log "ready; environment in $ENV_FILE"
    ;;
  stop) stop_all ;;
  status) status ;;
  purge)
    stop_all
    rm -rf "$STATE"
    ;;
  *) die "usage: $0 start|stop|status|purge" ;;
esac
