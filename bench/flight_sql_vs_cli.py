#!/usr/bin/env python3
"""The canonical overlap through the hub's Flight SQL endpoint from Python
(ADBC) against the same query through `airlock query`, in the same run, on
the same hub and nodes.

    bash .ci/python.sh            # a venv with adbc-driver-flightsql, pyarrow
    cargo build --release --bin airlock
    ~/.cache/airlock-venv/bin/python bench/flight_sql_vs_cli.py [--rows 1000000] [--runs 5]

Starts `airlock up` on the demo data, then alternates the two clients for
`--runs` rounds: `airlock query --collab demo SQL` (a process: connect,
submit, poll, fetch, print) and, in this process, a new ADBC connection,
execute and fetch into Arrow. Checks both released the same rows, prints
each median and the ratio Flight SQL / CLI (the target is at most 1.1).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

HERE = os.path.dirname(os.path.abspath(__file__))
AIRLOCK = os.environ.get("AIRLOCK_BIN", os.path.join(HERE, "..", "target", "release", "airlock"))
SQL = ("SELECT a.segment, COUNT(DISTINCT a.email) AS people "
       "FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="airlock-flight-bench-")
    data = os.path.join(tmp, "demo")
    up = subprocess.Popen([AIRLOCK, "up", "--dir", data, "--rows", str(args.rows)],
                          stdout=subprocess.PIPE, text=True)
    try:
        for line in up.stdout:
            if "Ctrl-C stops everything" in line:
                break
        else:
            sys.exit("airlock up did not start")
        info = json.load(open(os.path.join(tmp, "demo-cluster", "cluster.json")))
        token = info["tokens"][info["analyst"]]
        env = dict(os.environ, AIRLOCK_HUB=info["hub"], AIRLOCK_CA=info["ca"], AIRLOCK_TOKEN=token)
        ca = open(info["ca"]).read()

        def cli():
            t = time.perf_counter()
            out = subprocess.run([AIRLOCK, "query", "--collab", info["collaboration"], "--format", "json", SQL],
                                 env=env, capture_output=True, text=True, check=True).stdout
            return time.perf_counter() - t, out

        def adbc():
            t = time.perf_counter()
            with flight_sql.connect(info["flight_sql"], autocommit=True, db_kwargs={
                DatabaseOptions.TLS_ROOT_CERTS.value: ca,
                DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer " + token,
            }) as conn:
                cur = conn.cursor()
                cur.execute(SQL)
                table = cur.fetch_arrow_table()
            return time.perf_counter() - t, table

        cli_s, adbc_s = [], []
        cli()  # warm both paths once (page cache, the collaboration's sync)
        _, table = adbc()
        for _ in range(args.runs):
            s, out = cli()
            cli_s.append(s)
            s, t2 = adbc()
            adbc_s.append(s)
            assert sorted(map(str, t2.to_pylist())) == sorted(map(str, table.to_pylist())), "results differ"
        released = sorted((str(r["segment"]), str(r["people"])) for r in table.to_pylist())
        from_cli = sorted((str(r["segment"]), str(r["people"])) for r in json.loads(out))
        assert released == from_cli, f"Flight SQL {released} != CLI {from_cli}"
        c, f = statistics.median(cli_s), statistics.median(adbc_s)
        print(f"rows {args.rows:,}, runs {args.runs}: airlock query median {c:.3f} s, "
              f"Flight SQL (ADBC, new connection each run) median {f:.3f} s, ratio {f / c:.2f}x")
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()


if __name__ == "__main__":
    main()
