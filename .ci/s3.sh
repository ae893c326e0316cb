#!/usr/bin/env bash
# Start a real S3-compatible server on loopback for the sources tests (the
# server of the `moto` package from PyPI, run as a process) and create the
# test bucket. Prints, as the LAST line on stdout, what the tests read:
#
#   eval "$(bash .ci/s3.sh | tail -1)"
#   AIRLOCK_REQUIRE_S3=1 cargo nextest run -p airlock-cli --test sources
#
# Idempotent: a server already answering on the port is reused.
set -euo pipefail
PORT=${AIRLOCK_S3_PORT:-5055}
BUCKET=airlock-test
log() { echo "s3.sh: $*" >&2; }

if ! python3 -c "import moto.server, boto3" 2>/dev/null; then
    log "installing moto[server] with pip"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq python3-pip >&2
    fi
    # Debian's own python refuses installs outside a venv (PEP 668).
    python3 -m pip install -q "moto[server]" >&2 \
        || python3 -m pip install -q --break-system-packages "moto[server]" >&2
fi
up() { python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/moto-api/', timeout=1)" 2>/dev/null; }
if ! up; then
    log "starting moto_server on 127.0.0.1:$PORT"
    nohup python3 -m moto.server -H 127.0.0.1 -p "$PORT" >/tmp/airlock-moto.log 2>&1 &
    for _ in $(seq 1 50); do
        up && break
        sleep 0.2
    done
fi
python3 - "$PORT" "$BUCKET" >&2 <<'PY'
import sys, boto3
port, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="airlock", aws_secret_access_key="airlock-test-secret")
names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
if bucket not in names:
    s3.create_bucket(Bucket=bucket)
print(f"s3.sh: bucket {bucket} ready")
PY
echo "export AIRLOCK_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT AIRLOCK_TEST_S3_BUCKET=$BUCKET"
