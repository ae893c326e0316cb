#!/usr/bin/env python3
"""Crypto mode's PSI against OpenMined PSI (cardinality mode) on the same
identifiers, side by side on this machine.

    pip install openmined-psi
    cargo build --release --bin airlock
    python3 bench/psi_vs_openmined.py [--n 100000] [--runs 3] [--big 1000000]

For each size, writes two identifier files with half of the asker's
identifiers in the responder's, runs `airlock bench-psi` on them (both
parties in one process, every message over loopback TCP) and OpenMined PSI
(client and server in this process: CreateSetupMessage, CreateRequest,
ProcessRequest, GetIntersectionSize), checks both found the same overlap,
and prints the medians and the ratio. `--big` adds one Airlock-only run at
that size (OpenMined's time there is extrapolated from nothing: not run).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AIRLOCK = os.environ.get("AIRLOCK_BIN", os.path.join(HERE, "..", "target", "release", "airlock"))


def ids(prefix, start, n):
    return [f"{prefix}{i}@example.com" for i in range(start, start + n)]


def write(path, items):
    with open(path, "w") as f:
        f.write("\n".join(items))
        f.write("\n")


def airlock(asker, responder, sums=False):
    cmd = [AIRLOCK, "bench-psi", "--asker", asker, "--responder", responder]
    if sums:
        cmd.append("--sums")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def openmined(client_items, server_items):
    import private_set_intersection.python as psi

    t = time.perf_counter()
    server = psi.server.CreateWithNewKey(False)  # cardinality only
    client = psi.client.CreateWithNewKey(False)
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items, psi.DataStructure.GCS)
    request = client.CreateRequest(client_items)
    response = server.ProcessRequest(request)
    size = client.GetIntersectionSize(setup, response)
    return size, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--big", type=int, default=0)
    args = ap.parse_args()
    if not os.path.exists(AIRLOCK):
        sys.exit(f"{AIRLOCK} not found: cargo build --release --bin airlock")
    with tempfile.TemporaryDirectory() as d:
        a, r = os.path.join(d, "asker.txt"), os.path.join(d, "responder.txt")
        asker_items = ids("person", 0, args.n)
        responder_items = ids("person", args.n // 2, args.n)
        write(a, asker_items)
        write(r, responder_items)
        expect = args.n - args.n // 2
        ours, theirs, sums = [], [], []
        for _ in range(args.runs):
            res = airlock(a, r)
            assert res["overlap"] == expect, res
            ours.append(res)
            size, secs = openmined(asker_items, responder_items)
            # GCS has a false-positive rate of 1e-9 per item: exact here.
            assert size == expect, size
            theirs.append(secs)
            s = airlock(a, r, sums=True)
            assert s["overlap"] == expect and s["sum"] == expect, s
            sums.append(s)
        med = lambda rs, k: statistics.median(x[k] for x in rs)
        report = {
            "n": args.n,
            "runs": args.runs,
            "cores": os.cpu_count(),
            "airlock_overlap_s": med(ours, "total_s"),
            "openmined_cardinality_s": statistics.median(theirs),
            "speedup": statistics.median(theirs) / med(ours, "total_s"),
            "airlock_breakdown_s": {k: med(ours, k) for k in ("hash_s", "matcher_s", "grouper_s", "transfer_s")},
            "airlock_bytes": med(ours, "bytes"),
            "airlock_overlap_and_sum_s": med(sums, "total_s"),
            "airlock_sum_breakdown_s": {k: med(sums, k) for k in ("hash_s", "matcher_s", "grouper_s", "transfer_s")},
            # The elliptic-curve floor measured in the same run (hashing and
            # the multiplications the protocol needs, on every core).
            "overlap_floor_s": med(ours, "floor_s"),
            "overlap_over_floor": med(ours, "over_floor"),
            "overlap_and_sum_floor_s": med(sums, "floor_s"),
            "overlap_and_sum_over_floor": med(sums, "over_floor"),
            "per_core_s": ours[0]["per_core_s"],
        }
        if args.big:
            write(a, ids("person", 0, args.big))
            write(r, ids("person", args.big // 2, args.big))
            big = airlock(a, r)
            assert big["overlap"] == args.big - args.big // 2, big
            big_sums = airlock(a, r, sums=True)
            report["big"] = {"n": args.big, "overlap": big, "overlap_and_sum": big_sums}
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
