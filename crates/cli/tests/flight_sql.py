"""Airlock's Flight SQL endpoint from Python, with ADBC (PyPI's
adbc-driver-flightsql) against a real hub and nodes started by
crates/cli/tests/flight_sql.rs, which passes what `airlock query` released
for the same queries in a JSON file (argv[1]). Exits non-zero on the first
check that fails, saying which."""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
from adbc_driver_flightsql import DatabaseOptions
from adbc_driver_manager import StatementOptions

cfg = json.load(open(sys.argv[1]))
CA = open(cfg["ca"]).read()
URL = cfg["url"]
ANALYST = cfg["tokens"]["advertiser"]


def connect(token, collab=None, basic=False):
    kw = {DatabaseOptions.TLS_ROOT_CERTS.value: CA}
    if basic:
        kw["username"] = "anyone"
        kw["password"] = token
    else:
        kw[DatabaseOptions.AUTHORIZATION_HEADER.value] = "Bearer " + token
    if collab:
        kw[DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + "x-airlock-collaboration"] = collab
    return flight_sql.connect(URL, db_kwargs=kw, autocommit=True)


def rows(table):
    """Rows as sorted lists of JSON values (the comparison form)."""
    out = [list(r.values()) for r in table.to_pylist()]
    return sorted(json.loads(json.dumps(out, default=str)))


def fails(conn, sql, parameters=None):
    """The error `sql` raises, as (message, machine-readable body)."""
    cur = conn.cursor()
    try:
        cur.execute(sql, parameters)
        cur.fetch_arrow_table()
    except adbc_driver_manager.Error as e:
        body = None
        for key, value in getattr(e, "details", None) or []:
            key = key.decode() if isinstance(key, bytes) else key
            if key.lower() == "x-airlock-error":
                body = json.loads(value if isinstance(value, str) else value.decode())
        if body is None:
            print("details:", repr(getattr(e, "details", None)), file=sys.stderr)
        return str(e), body
    finally:
        cur.close()
    raise AssertionError(f"expected {sql!r} to fail")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


with connect(ANALYST) as conn:
    # Metadata: only the member's collaborations, only configured columns.
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    schemas = {s["db_schema_name"]: s for c in objects for s in (c["catalog_db_schemas"] or [])}
    check([c["catalog_name"] for c in objects] == ["airlock"], "one catalog, airlock")
    check(sorted(schemas) == sorted(cfg["mine"]), f"schemas are the member's collaborations: {sorted(schemas)}")
    tables = {t["table_name"]: t for t in schemas["demo"]["db_schema_tables"]}
    check(sorted(tables) == ["audience", "purchases"], "the configured tables")
    for name, cols in cfg["columns"].items():
        got = sorted(c["column_name"] for c in tables[name]["table_columns"])
        check(got == sorted(cols), f"{name}: configured columns only ({got})")
    schema = conn.adbc_get_table_schema("purchases", db_schema_filter="demo")
    check(sorted(schema.names) == sorted(cfg["columns"]["purchases"]), "a table's Arrow schema")
    info = conn.adbc_get_info()
    check(info.get("vendor_name") == "Airlock", f"GetSqlInfo names the server: {info.get('vendor_name')}")

    # The canonical overlap, qualified: the rows `airlock query` released.
    cur = conn.cursor()
    cur.execute(cfg["overlap_qualified"])
    check(rows(cur.fetch_arrow_table()) == cfg["overlap_rows"], "the overlap through Flight SQL = airlock query")
    cur.execute(cfg["overlap_qualified"])
    df = cur.fetch_df()
    check(len(df) == len(cfg["overlap_rows"]), "and as a pandas DataFrame")
    cur.close()

    # Incremental execution (PollFlightInfo): the query runs while the
    # client polls; progress is reported; an empty poll after the last
    # partition ends it.
    cur = conn.cursor()
    cur.adbc_statement.set_options(**{StatementOptions.INCREMENTAL.value: "true"})
    got, progress = [], []
    for _ in range(600):
        parts, _schema = cur.adbc_execute_partitions(cfg["overlap_qualified"])
        progress.append(cur.adbc_statement.get_option_float(StatementOptions.PROGRESS.value))
        if not parts and got:
            break
        for p in parts:
            cur.adbc_read_partition(p)
            got.extend(cur.fetch_arrow_table().to_pylist())
    cur.close()
    check(sorted(json.loads(json.dumps([list(r.values()) for r in got], default=str))) == cfg["overlap_rows"],
          f"incremental execution releases the same rows (progress seen: {progress})")
    check(all(0.0 <= p <= 1.0 for p in progress) and 1.0 in progress, "progress in [0, 1], reaching 1")

    # Unqualified names: this member is in several collaborations.
    msg, body = fails(conn, cfg["overlap"])
    check("qualify" in msg and body and body["code"] == "bad_input", f"unqualified with two collaborations: {msg}")

    # A refused query: control and column, as the CLI prints them.
    msg, body = fails(conn, "SELECT * FROM demo.audience")
    expected = cfg["refusal"]
    check(expected["control"] in msg, f"the refusal names its control: {msg}")
    check(body is not None and body["code"] == "refused", f"machine-readable refusal: {body}")
    check(body["refusal"]["control"] == expected["control"], "its control")
    check(body["refusal"].get("column") == expected.get("column"), "its column")

    # Another member's collaboration and one that does not exist: alike.
    other, _ = fails(conn, "SELECT COUNT(*) FROM solo.audience")
    none, _ = fails(conn, "SELECT COUNT(*) FROM nosuch.audience")
    check(other == none and "no such collaboration" in other, f"not mine = no such: {other}")

    try:
        cur = conn.cursor()
        cur.adbc_ingest("audience", pa.table({"email": ["x"]}), mode="append")
        raise AssertionError("ingestion was accepted")
    except adbc_driver_manager.Error as e:
        check("refused" in str(e), f"bulk ingestion refused: {str(e)[:100]}")

    # A template, its parameter bound as a value.
    cur = conn.cursor()
    cur.execute("EXECUTE demo.overlap_in_region", parameters=("north",))
    check(rows(cur.fetch_arrow_table()) == cfg["template_rows"], "a template with a bound parameter")
    cur.execute("EXECUTE demo.overlap_in_region", parameters=pa.record_batch({"region": ["north"]}))
    check(rows(cur.fetch_arrow_table()) == cfg["template_rows"], "bound by name")
    cur.close()
    msg, _ = fails(conn, "EXECUTE demo.overlap_in_region", parameters=("north' OR 1=1 --",))
    check("allowed" in msg or "not one of" in msg or "region" in msg, f"a value outside the allowed set is refused: {msg[:120]}")

# The collaboration header; basic-auth handshake with the token.
with connect(ANALYST, collab="demo") as conn:
    cur = conn.cursor()
    cur.execute(cfg["overlap"])
    check(rows(cur.fetch_arrow_table()) == cfg["overlap_rows"], "unqualified names with the collaboration header")
    # Statements that are not queries (the guard refuses them, as over REST).
    for sql in [
        "DROP TABLE demo.audience",
        "INSERT INTO demo.audience VALUES (1)",
        "DELETE FROM demo.audience",
        "CREATE TABLE demo.t (x INT)",
        "SET datafusion.execution.batch_size = 1",
        "BEGIN",
        "SELECT * FROM information_schema.tables",
    ]:
        msg, body = fails(conn, sql)
        check(body is not None and body["code"] in ("refused", "bad_input", "not_found"),
              f"refused: {sql} ({msg.splitlines()[0][:140]})")
with connect(ANALYST, collab="demo", basic=True) as conn:
    cur = conn.cursor()
    cur.execute(cfg["overlap"])
    check(rows(cur.fetch_arrow_table()) == cfg["overlap_rows"], "basic-auth handshake with the token as password")

# A wrong token is refused, and says nothing of collaborations.
with connect("not-a-token") as conn:
    msg, body = fails(conn, "SELECT COUNT(*) FROM demo.audience")
    check("bearer token" in msg and body["code"] == "unauthorized", f"a wrong token: {msg[:100]}")

# Under DP: noise metadata in the result's schema; the fourth is refused for budget.
with connect(ANALYST, collab="demo_dp") as conn:
    cur = conn.cursor()
    for i, sql in enumerate(cfg["dp_queries"]):
        cur.execute(sql)
        t = cur.fetch_arrow_table()
        meta = t.schema.metadata or {}
        noise = json.loads(meta[b"airlock.noise"])
        check(len(noise) > 0, f"DP query {i + 1}: noise notes in the schema metadata ({len(noise)} columns)")
    msg, body = fails(conn, cfg["dp_queries"][0])
    check("privacy-budget" in msg and "left" in msg, f"the fourth is refused for budget: {msg[:200]}")
    check(body["refusal"]["control"] == "privacy-budget", "machine-readable budget refusal")

print("all Flight SQL checks passed")
