#!/usr/bin/env bash
# A Python virtual environment with the SQL clients' packages from PyPI
# (ADBC's Flight SQL driver, pyarrow, pandas), for the Flight SQL tests
# (crates/cli/tests/flight_sql.rs) and the client benchmark. Prints, as the
# LAST line on stdout, what the tests read:
#
#   eval "$(bash .ci/python.sh | tail -1)"
#   AIRLOCK_REQUIRE_PYTHON=1 cargo nextest run -p airlock-cli --test flight_sql
#
# Idempotent: an environment that already imports them is reused.
set -euo pipefail
VENV=${AIRLOCK_VENV:-$HOME/.cache/airlock-venv}
log() { echo "python.sh: $*" >&2; }
PKGS="adbc-driver-flightsql adbc-driver-manager pyarrow pandas"

if ! "$VENV/bin/python" -c "import adbc_driver_flightsql.dbapi, pyarrow, pandas" 2>/dev/null; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
    fi
    log "making $VENV with $PKGS"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q $PKGS >&2
fi
"$VENV/bin/python" -c "import adbc_driver_flightsql.dbapi, pyarrow, pandas" >&2
echo "AIRLOCK_TEST_PYTHON=$VENV/bin/python"
