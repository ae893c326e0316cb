-- Airlock store, schema version 4: the tables each query read on a data
-- owner's node (its own ledger, `Store::debit_fragment`): a query is
-- debited once on a node however many of its tables it reads there, and
-- the same table read again under the same query id is a replay. Never
-- updated nor deleted.
CREATE TABLE privacy_fragment_reads (
    collab TEXT NOT NULL REFERENCES collaborations (name),
    query_id TEXT NOT NULL,
    table_alias TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (collab, query_id, table_alias)
);
