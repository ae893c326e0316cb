#!/usr/bin/env bash
# Start a local PostgreSQL for the tests of crates/store and print, as the LAST
# line on stdout, the URL of a database they may use:
#
#   eval "$(bash .ci/postgres.sh | tail -1)"
#   AIRLOCK_REQUIRE_POSTGRES=1 cargo nextest run -p airlock-store
#
# Debian 12 (CI and developer machines run as root). Installs the `postgresql`
# package if no server is installed, starts the newest installed version's
# cluster (creating one if there is none) listening on 127.0.0.1, and creates
# the role and database `airlock`. Idempotent: running it again only checks.
# Everything but the final line goes to stderr.
set -euo pipefail

ROLE=airlock
DB=airlock
# A throwaway password for a test server reachable only on this machine.
PASSWORD=${AIRLOCK_PG_PASSWORD:-airlock-test}
CLUSTER=main

log() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it starts a cluster owned by the postgres user)"
    exit 1
fi

newest_server() {
    # The newest installed server version, by its binaries.
    local dir
    for dir in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$dir" ] || continue
        basename "$(dirname "$(dirname "$dir")")"
    done | sort -n | tail -1
}

VERSION=$(newest_server)
if [ -z "$VERSION" ] || ! command -v pg_ctlcluster >/dev/null; then
    log "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    VERSION=$(newest_server)
fi
if [ -z "$VERSION" ]; then
    log "no PostgreSQL server binaries found after installing postgresql"
    exit 1
fi

if ! pg_lsclusters -h "$VERSION" "$CLUSTER" >/dev/null 2>&1; then
    log "creating cluster $VERSION/$CLUSTER"
    pg_createcluster "$VERSION" "$CLUSTER" >&2
fi

# Listen on the loopback address only (the default is 'localhost', which may
# also mean ::1; 127.0.0.1 is what the URL below names). Debian's
# postgresql.conf includes conf.d/*.conf.
CONF_DIR=/etc/postgresql/$VERSION/$CLUSTER/conf.d
WANT="listen_addresses = '127.0.0.1'"
if [ "$(cat "$CONF_DIR/airlock.conf" 2>/dev/null || true)" != "$WANT" ]; then
    mkdir -p "$CONF_DIR"
    echo "$WANT" >"$CONF_DIR/airlock.conf"
    chown postgres:postgres "$CONF_DIR/airlock.conf"
    if pg_ctlcluster "$VERSION" "$CLUSTER" status >/dev/null 2>&1; then
        log "restarting $VERSION/$CLUSTER to listen on 127.0.0.1"
        pg_ctlcluster "$VERSION" "$CLUSTER" restart >&2
    fi
fi

if ! pg_ctlcluster "$VERSION" "$CLUSTER" status >/dev/null 2>&1; then
    log "starting cluster $VERSION/$CLUSTER"
    pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi

PORT=$(pg_lsclusters -h "$VERSION" "$CLUSTER" | awk '{print $3}')

for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$PORT"; then
        break
    fi
    sleep 0.5
done
if ! pg_isready -q -h 127.0.0.1 -p "$PORT"; then
    log "the server does not answer on 127.0.0.1:$PORT; last log lines:"
    tail -20 "/var/log/postgresql/postgresql-$VERSION-$CLUSTER.log" >&2 || true
    exit 1
fi

as_postgres() {
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"
}

# Role: created once; its password and rights are (re)set every run.
if [ "$(as_postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
    log "creating role $ROLE"
    as_postgres -c "CREATE ROLE $ROLE LOGIN"
fi
as_postgres -c "ALTER ROLE $ROLE WITH LOGIN CREATEDB PASSWORD '$PASSWORD'"

if [ "$(as_postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
    log "creating database $DB"
    as_postgres -c "CREATE DATABASE $DB OWNER $ROLE"
fi

URL="postgres://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
if ! PGPASSWORD=$PASSWORD psql -X -q -tA -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DB" \
    -c "SELECT 1" >/dev/null; then
    log "cannot log in as $ROLE over TCP"
    exit 1
fi
log "PostgreSQL $VERSION ready on 127.0.0.1:$PORT, database $DB"
echo "export AIRLOCK_TEST_POSTGRES_URL=$URL"
