-- Airlock hub store, schema version 2: differential-privacy budgets.
--
-- Amounts are integers, so that sums never drift: epsilon in units of 1e-9
-- (nano-epsilon), delta in units of 1e-18 (atto-delta).

-- The budget of a collaboration (`analyst` = '', which no analyst name can
-- be) or of one analyst in it. Setting a budget replaces the row, and its
-- first period starts at `set_at_ms`; with `refresh_period_ms` the periods
-- repeat.
CREATE TABLE privacy_budgets (
    collab TEXT NOT NULL REFERENCES collaborations (name),
    analyst TEXT NOT NULL,
    nano_epsilon BIGINT NOT NULL CHECK (nano_epsilon >= 0),
    atto_delta BIGINT NOT NULL CHECK (atto_delta >= 0),
    refresh_period_ms BIGINT CHECK (refresh_period_ms IS NULL OR refresh_period_ms > 0),
    set_at_ms BIGINT NOT NULL,
    set_by TEXT NOT NULL,
    PRIMARY KEY (collab, analyst)
);

-- Every debit against the budgets, never updated nor deleted (a debit is
-- never refunded).
CREATE TABLE privacy_debits (
    id TEXT NOT NULL PRIMARY KEY,
    collab TEXT NOT NULL REFERENCES collaborations (name),
    analyst TEXT NOT NULL,
    query_id TEXT NOT NULL,
    nano_epsilon BIGINT NOT NULL CHECK (nano_epsilon > 0),
    atto_delta BIGINT NOT NULL CHECK (atto_delta >= 0),
    at_ms BIGINT NOT NULL
);

CREATE INDEX privacy_debits_by_collab ON privacy_debits (collab, at_ms);

CREATE INDEX privacy_debits_by_analyst ON privacy_debits (collab, analyst, at_ms);
