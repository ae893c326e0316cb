//! Differential-privacy budgets: a durable ledger of debits.
//!
//! Amounts are stored as integers so that sums never drift: epsilon in units
//! of 1e-9 (nano-epsilon), delta in units of 1e-18 (atto-delta). Values
//! given as `f64` are rounded to the nearest unit.

use airlock_protocol::AuditEvent;
use sqlx::AnyConnection;

use crate::error::{SqlContext, TxError};
use crate::{append_event_in, check_text, in_tx, now_ms, random_hex, Backend, Store, StoreError};

/// Units of epsilon per 1.0 (amounts are stored in nano-epsilon).
const EPSILON_UNITS: f64 = 1e9;
/// Units of delta per 1.0 (amounts are stored in atto-delta).
const DELTA_UNITS: f64 = 1e18;
/// The largest epsilon a budget or a cost may have (its nano-epsilon, and a
/// few of them added up, fit in an `i64`).
const MAX_EPSILON: f64 = 1e9;
/// The `analyst` column's value for a collaboration's own budget. No analyst
/// has this name: names are never empty.
const WHOLE_COLLAB: &str = "";

/// A privacy budget: the (epsilon, delta) that may be spent per period.
///
/// Stored as integers (epsilon in units of 1e-9, delta in units of 1e-18),
/// rounded to the nearest unit. `epsilon` must be finite, `0 <= epsilon <=
/// 1e9`; `delta` finite, `0 <= delta <= 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The epsilon that may be spent per period.
    pub epsilon: f64,
    /// The delta that may be spent per period.
    pub delta: f64,
    /// With `Some(p)` (`p > 0`), the budget is fresh again every `p`
    /// milliseconds after it was set; with `None`, it never refreshes.
    pub refresh_period_ms: Option<i64>,
}

/// What one query costs: finite, `0 < epsilon <= 1e9` (at least 1e-9 after
/// rounding), `0 <= delta <= 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// The query's epsilon.
    pub epsilon: f64,
    /// The query's delta.
    pub delta: f64,
}

/// What is left to spend in the current period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Remaining {
    /// The epsilon left.
    pub epsilon: f64,
    /// The delta left.
    pub delta: f64,
    /// When the current period ends (unix ms) and the budget is fresh again;
    /// `None` if it never refreshes. When both a collaboration's and an
    /// analyst's budget apply, the earlier of their period ends.
    pub period_ends_ms: Option<i64>,
}

/// A budget as stored.
#[derive(Debug, Clone, Copy)]
struct BudgetRow {
    nano_epsilon: i64,
    atto_delta: i64,
    refresh_period_ms: Option<i64>,
    set_at_ms: i64,
}

impl BudgetRow {
    /// The current period at `at`: its start, and its end if it has one.
    /// Before the budget's set time, that is the first period.
    fn period(&self, at: i64) -> (i64, Option<i64>) {
        match self.refresh_period_ms {
            Some(p) if p > 0 => {
                let since = at.saturating_sub(self.set_at_ms).max(0);
                let start = self.set_at_ms.saturating_add(since - since % p);
                (start, Some(start.saturating_add(p)))
            }
            _ => (self.set_at_ms, None),
        }
    }
}

/// What is left of one budget in its current period, in stored units.
#[derive(Debug, Clone, Copy)]
struct Left {
    nano_epsilon: i64,
    atto_delta: i64,
    period_ends_ms: Option<i64>,
}

impl Left {
    /// Refuses a cost that does not fit.
    fn check(
        &self,
        nano_epsilon: i64,
        atto_delta: i64,
        scope: &'static str,
    ) -> Result<(), StoreError> {
        if nano_epsilon > self.nano_epsilon || atto_delta > self.atto_delta {
            return Err(StoreError::Overspend {
                needed_epsilon: nano_epsilon as f64 / EPSILON_UNITS,
                left_epsilon: self.nano_epsilon as f64 / EPSILON_UNITS,
                needed_delta: atto_delta as f64 / DELTA_UNITS,
                left_delta: self.atto_delta as f64 / DELTA_UNITS,
                scope,
            });
        }
        Ok(())
    }

    /// What is left after spending a cost that fits.
    fn minus(self, nano_epsilon: i64, atto_delta: i64) -> Left {
        Left {
            nano_epsilon: self.nano_epsilon - nano_epsilon,
            atto_delta: self.atto_delta - atto_delta,
            ..self
        }
    }

    /// The tighter of two budgets: the smaller amounts, the earlier end.
    fn min(self, other: Left) -> Left {
        Left {
            nano_epsilon: self.nano_epsilon.min(other.nano_epsilon),
            atto_delta: self.atto_delta.min(other.atto_delta),
            period_ends_ms: match (self.period_ends_ms, other.period_ends_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    fn remaining(self) -> Remaining {
        Remaining {
            epsilon: self.nano_epsilon as f64 / EPSILON_UNITS,
            delta: self.atto_delta as f64 / DELTA_UNITS,
            period_ends_ms: self.period_ends_ms,
        }
    }
}

/// `epsilon` in nano-epsilon, if it is finite and `0 <= epsilon <= 1e9`.
fn to_nano_epsilon(what: &str, epsilon: f64, up: bool) -> Result<i64, StoreError> {
    if !epsilon.is_finite() || !(0.0..=MAX_EPSILON).contains(&epsilon) {
        return Err(StoreError::BadInput(format!(
            "{what} epsilon must be a finite number from 0 to 1e9"
        )));
    }
    Ok(units(epsilon * EPSILON_UNITS, up))
}

/// `x` stored units as a whole number: rounded up for a query's cost and
/// down for a budget, so rounding never lets a query spend more than it is
/// charged (a cost of 1.4e-9 was charged 1e-9, red team); a value within
/// a millionth of a unit (what decimal fractions such as 0.3 become in binary) is
/// that unit (relative to its size: 1e-12, far above binary rounding).
fn units(x: f64, up: bool) -> i64 {
    let near = x.round();
    if (x - near).abs() <= 1e-6_f64.max(x.abs() * 1e-12) {
        near as i64
    } else if up {
        x.ceil() as i64
    } else {
        x.floor() as i64
    }
}

/// `delta` in atto-delta, if it is finite and `0 <= delta <= 1`.
fn to_atto_delta(what: &str, delta: f64, up: bool) -> Result<i64, StoreError> {
    if !delta.is_finite() || !(0.0..=1.0).contains(&delta) {
        return Err(StoreError::BadInput(format!(
            "{what} delta must be a finite number from 0 to 1"
        )));
    }
    Ok(units(delta * DELTA_UNITS, up))
}

/// A cost in stored units: (nano-epsilon >= 1, atto-delta).
fn cost_units(cost: &Cost) -> Result<(i64, i64), StoreError> {
    let nano_epsilon = to_nano_epsilon("a query's", cost.epsilon, true)?;
    // Below one unit before rounding up: a rule this small is a mistake.
    if units(cost.epsilon * EPSILON_UNITS, false) < 1 {
        return Err(StoreError::BadInput(
            "a query's epsilon must be at least 1e-9".into(),
        ));
    }
    Ok((nano_epsilon, to_atto_delta("a query's", cost.delta, true)?))
}

/// The budget of `collab` (`analyst` = [`WHOLE_COLLAB`]) or of an analyst,
/// if set. With `lock` on PostgreSQL, locks its row until the transaction
/// ends (`FOR UPDATE`); SQLite's `BEGIN IMMEDIATE` already serialises
/// writers.
async fn load_budget(
    conn: &mut AnyConnection,
    backend: Backend,
    collab: &str,
    analyst: &str,
    lock: bool,
) -> Result<Option<BudgetRow>, TxError> {
    let mut sql = String::from(
        "SELECT nano_epsilon, atto_delta, refresh_period_ms, set_at_ms \
         FROM privacy_budgets WHERE collab = $1 AND analyst = $2",
    );
    if lock && backend == Backend::Postgres {
        sql.push_str(" FOR UPDATE");
    }
    let row: Option<(i64, i64, Option<i64>, i64)> = sqlx::query_as(&sql)
        .bind(collab)
        .bind(analyst)
        .fetch_optional(&mut *conn)
        .await
        .ctx("read a privacy budget")?;
    Ok(row.map(
        |(nano_epsilon, atto_delta, refresh_period_ms, set_at_ms)| BudgetRow {
            nano_epsilon,
            atto_delta,
            refresh_period_ms,
            set_at_ms,
        },
    ))
}

/// What is left of `budget` in its period at `at`: the debits of the
/// collaboration (`analyst` None) or of one analyst since the period began
/// are spent.
async fn left(
    conn: &mut AnyConnection,
    collab: &str,
    analyst: Option<&str>,
    budget: &BudgetRow,
    at: i64,
) -> Result<Left, TxError> {
    let (start, period_ends_ms) = budget.period(at);
    let mut sql = String::from(
        "SELECT CAST(COALESCE(SUM(nano_epsilon), 0) AS BIGINT), \
         CAST(COALESCE(SUM(atto_delta), 0) AS BIGINT) \
         FROM privacy_debits WHERE collab = $1 AND at_ms >= $2",
    );
    if analyst.is_some() {
        sql.push_str(" AND analyst = $3");
    }
    let mut query = sqlx::query_as(&sql).bind(collab).bind(start);
    if let Some(analyst) = analyst {
        query = query.bind(analyst);
    }
    let (spent_epsilon, spent_delta): (i64, i64) = query
        .fetch_one(&mut *conn)
        .await
        .ctx("sum privacy debits")?;
    Ok(Left {
        nano_epsilon: budget.nano_epsilon.saturating_sub(spent_epsilon).max(0),
        atto_delta: budget.atto_delta.saturating_sub(spent_delta).max(0),
        period_ends_ms,
    })
}

fn no_budget(collab: &str) -> StoreError {
    StoreError::BadInput(format!(
        "no privacy budget is set for collaboration {collab:?}"
    ))
}

/// The time a debit at `now_ms` is counted at: never before either
/// budget's set time, so that it counts in the period it was checked
/// against.
fn debit_time(now_ms: i64, collab: &BudgetRow, analyst: Option<&BudgetRow>) -> i64 {
    let at = now_ms.max(collab.set_at_ms);
    analyst.map_or(at, |b| at.max(b.set_at_ms))
}

impl Store {
    /// Sets (replaces) a privacy budget: the whole collaboration's
    /// (`analyst` None), which every debit in it counts against, or one
    /// analyst's, which only that analyst's debits count against. Audited
    /// as `budget.set` (actor `by`; payload: analyst, nano_epsilon,
    /// atto_delta, refresh_period_ms, set_at_ms).
    ///
    /// The first period starts when the budget is first set. Replacing a
    /// budget changes its amounts and refresh period but keeps that start,
    /// so what was spent in the current period still counts: replacing a
    /// budget never refunds it.
    /// [`StoreError::NotFound`] if the collaboration does not exist;
    /// [`StoreError::BadInput`] for amounts out of range (see [`Budget`]) or
    /// a refresh period that is not positive.
    pub async fn set_budget(
        &self,
        collab: &str,
        analyst: Option<&str>,
        budget: &Budget,
        by: &str,
    ) -> Result<(), StoreError> {
        check_text("collaboration name", collab)?;
        if let Some(analyst) = analyst {
            check_text("analyst", analyst)?;
        }
        check_text("member", by)?;
        let nano_epsilon = to_nano_epsilon("a budget's", budget.epsilon, false)?;
        let atto_delta = to_atto_delta("a budget's", budget.delta, false)?;
        if budget.refresh_period_ms.is_some_and(|p| p <= 0) {
            return Err(StoreError::BadInput(
                "a budget's refresh period must be positive".into(),
            ));
        }
        let key = analyst.unwrap_or(WHOLE_COLLAB);
        in_tx!(self, |tx| {
            let exists: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM collaborations WHERE name = $1")
                    .bind(collab)
                    .fetch_one(&mut *tx)
                    .await
                    .ctx("look up a collaboration")?;
            if exists == 0 {
                return Err(StoreError::NotFound(format!("collaboration {collab:?}")).into());
            }
            let at = now_ms();
            sqlx::query(
                "INSERT INTO privacy_budgets \
                 (collab, analyst, nano_epsilon, atto_delta, refresh_period_ms, set_at_ms, set_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (collab, analyst) DO UPDATE SET \
                 nano_epsilon = excluded.nano_epsilon, atto_delta = excluded.atto_delta, \
                 refresh_period_ms = excluded.refresh_period_ms, \
                 set_by = excluded.set_by",
            )
            .bind(collab)
            .bind(key)
            .bind(nano_epsilon)
            .bind(atto_delta)
            .bind(budget.refresh_period_ms)
            .bind(at)
            .bind(by)
            .execute(&mut *tx)
            .await
            .ctx("store a privacy budget")?;
            append_event_in(
                &mut tx,
                collab,
                by,
                &AuditEvent::BudgetSet {
                    analyst: analyst.map(str::to_string),
                    nano_epsilon,
                    atto_delta,
                    refresh_period_ms: budget.refresh_period_ms,
                    set_at_ms: at,
                },
            )
            .await?;
        })
    }

    /// Spends `cost` of `analyst`'s query `query_id` in `collab` at
    /// `now_ms`, atomically: in one transaction, committed before this
    /// returns, it computes what is left of the collaboration's budget and
    /// of the analyst's (if one is set) in their current periods, and if
    /// `cost` fits both, records a debit and audits it as `budget.debited`
    /// (actor: the analyst; payload: query, nano_epsilon, atto_delta,
    /// at_ms). Returns what the analyst has left afterwards (the tighter of
    /// the two budgets).
    ///
    /// Concurrent debits take turns (`BEGIN IMMEDIATE` on SQLite, a lock on
    /// the collaboration's budget row on PostgreSQL), so they can never
    /// together spend more than a budget. A debit is never refunded. The
    /// debit is counted at `now_ms`, or at the later set time of either
    /// budget.
    ///
    /// Errors: [`StoreError::Overspend`] if the cost does not fit (nothing is
    /// recorded); [`StoreError::BadInput`] for a bad cost (see [`Cost`]) or
    /// if no budget is set for the collaboration.
    pub async fn debit(
        &self,
        collab: &str,
        analyst: &str,
        query_id: &str,
        cost: &Cost,
        now_ms: i64,
    ) -> Result<Remaining, StoreError> {
        check_text("collaboration name", collab)?;
        check_text("analyst", analyst)?;
        check_text("query id", query_id)?;
        let (nano_epsilon, atto_delta) = cost_units(cost)?;
        let backend = self.backend;
        in_tx!(self, |tx| {
            charge(
                &mut tx,
                backend,
                collab,
                analyst,
                query_id,
                (nano_epsilon, atto_delta),
                now_ms,
            )
            .await?
        })
    }

    /// A data owner's node's debit for one fragment of query `query_id`
    /// over its table `table`: the query's cost is debited (as
    /// [`Store::debit`]) with its first fragment on this ledger, a second
    /// table of the same query is served without a second debit, and the
    /// same table again under the same query id is refused
    /// ([`StoreError::Conflict`]: a replay). All in one transaction.
    /// Returns whether this fragment was the one charged.
    pub async fn debit_fragment(
        &self,
        collab: &str,
        analyst: &str,
        query_id: &str,
        table: &str,
        cost: &Cost,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        check_text("collaboration name", collab)?;
        check_text("analyst", analyst)?;
        check_text("query id", query_id)?;
        check_text("table", table)?;
        let units = cost_units(cost)?;
        let backend = self.backend;
        in_tx!(self, |tx| {
            // The budget row first: on PostgreSQL its lock serialises
            // every debit of the collaboration, these reads included.
            load_budget(&mut tx, backend, collab, WHOLE_COLLAB, true)
                .await?
                .ok_or_else(|| no_budget(collab))?;
            let reads: Vec<String> = sqlx::query_scalar(
                "SELECT table_alias FROM privacy_fragment_reads \
                 WHERE collab = $1 AND query_id = $2",
            )
            .bind(collab)
            .bind(query_id)
            .fetch_all(&mut *tx)
            .await
            .ctx("look up a query's reads")?;
            if reads.iter().any(|t| t == table) {
                return Err(StoreError::Conflict(format!(
                    "query {query_id} already read table {table:?} on this ledger"
                ))
                .into());
            }
            let first = reads.is_empty();
            if first {
                charge(&mut tx, backend, collab, analyst, query_id, units, now_ms).await?;
            }
            sqlx::query(
                "INSERT INTO privacy_fragment_reads (collab, query_id, table_alias, at_ms) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(collab)
            .bind(query_id)
            .bind(table)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .ctx("record a query's read")?;
            first
        })
    }
}

/// Debits `(nano_epsilon, atto_delta)` for `analyst`'s query in `tx`
/// (see [`Store::debit`]).
async fn charge(
    tx: &mut AnyConnection,
    backend: Backend,
    collab: &str,
    analyst: &str,
    query_id: &str,
    (nano_epsilon, atto_delta): (i64, i64),
    now_ms: i64,
) -> Result<Remaining, TxError> {
    {
        {
            let whole = load_budget(&mut *tx, backend, collab, WHOLE_COLLAB, true)
                .await?
                .ok_or_else(|| no_budget(collab))?;
            let own = load_budget(&mut *tx, backend, collab, analyst, false).await?;
            let at = debit_time(now_ms, &whole, own.as_ref());
            let whole_left = left(&mut *tx, collab, None, &whole, at).await?;
            whole_left.check(nano_epsilon, atto_delta, "collaboration")?;
            let mut after = whole_left.minus(nano_epsilon, atto_delta);
            if let Some(own) = &own {
                let own_left = left(&mut *tx, collab, Some(analyst), own, at).await?;
                own_left.check(nano_epsilon, atto_delta, "analyst")?;
                after = after.min(own_left.minus(nano_epsilon, atto_delta));
            }
            sqlx::query(
                "INSERT INTO privacy_debits \
                 (id, collab, analyst, query_id, nano_epsilon, atto_delta, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(random_hex(16)?)
            .bind(collab)
            .bind(analyst)
            .bind(query_id)
            .bind(nano_epsilon)
            .bind(atto_delta)
            .bind(at)
            .execute(&mut *tx)
            .await
            .ctx("record a privacy debit")?;
            append_event_in(
                &mut *tx,
                collab,
                analyst,
                &AuditEvent::BudgetDebited {
                    query: query_id.to_string(),
                    nano_epsilon,
                    atto_delta,
                    at_ms: at,
                },
            )
            .await?;
            Ok(after.remaining())
        }
    }
}

impl Store {
    /// What is left at `now_ms` of the collaboration's budget (`analyst`
    /// None), or what `analyst` may still spend: the tighter of the
    /// collaboration's budget and the analyst's own (if one is set).
    /// [`StoreError::BadInput`] if no budget is set for the collaboration.
    pub async fn remaining(
        &self,
        collab: &str,
        analyst: Option<&str>,
        now_ms: i64,
    ) -> Result<Remaining, StoreError> {
        check_text("collaboration name", collab)?;
        if let Some(analyst) = analyst {
            check_text("analyst", analyst)?;
        }
        let backend = self.backend;
        let mut conn = self.pool.acquire().await.ctx("connect to the store")?;
        // One read transaction, for a consistent view on both backends.
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .ctx("begin a transaction")?;
        let whole = load_budget(&mut tx, backend, collab, WHOLE_COLLAB, false)
            .await?
            .ok_or_else(|| no_budget(collab))?;
        let own = match analyst {
            Some(analyst) => load_budget(&mut tx, backend, collab, analyst, false)
                .await?
                .map(|b| (analyst, b)),
            None => None,
        };
        let at = debit_time(now_ms, &whole, own.as_ref().map(|(_, b)| b));
        let mut out = left(&mut tx, collab, None, &whole, at).await?;
        if let Some((analyst, own)) = &own {
            out = out.min(left(&mut tx, collab, Some(analyst), own, at).await?);
        }
        tx.rollback().await.ctx("end a transaction")?;
        Ok(out.remaining())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(refresh_period_ms: Option<i64>, set_at_ms: i64) -> BudgetRow {
        BudgetRow {
            nano_epsilon: 0,
            atto_delta: 0,
            refresh_period_ms,
            set_at_ms,
        }
    }

    #[test]
    fn periods() {
        assert_eq!(row(None, 100).period(5_000), (100, None));
        let b = row(Some(1_000), 100);
        assert_eq!(b.period(100), (100, Some(1_100)));
        assert_eq!(b.period(1_099), (100, Some(1_100)));
        assert_eq!(b.period(1_100), (1_100, Some(2_100)));
        assert_eq!(b.period(5_432), (5_100, Some(6_100)));
        // Before the set time: the first period.
        assert_eq!(b.period(0), (100, Some(1_100)));
        assert_eq!(b.period(i64::MIN), (100, Some(1_100)));
        let (start, end) = b.period(i64::MAX);
        assert_eq!((start, end), (9_223_372_036_854_775_100, Some(i64::MAX)));
    }

    #[test]
    fn amounts_round_to_units() {
        for up in [true, false] {
            assert_eq!(to_nano_epsilon("x", 1.0, up), Ok(1_000_000_000));
            assert_eq!(to_nano_epsilon("x", 0.1, up), Ok(100_000_000));
            assert_eq!(to_nano_epsilon("x", 0.3, up), Ok(300_000_000));
            assert_eq!(to_atto_delta("x", 1e-6, up), Ok(1_000_000_000_000));
            assert_eq!(to_atto_delta("x", 1.1e-5, up), Ok(11_000_000_000_000));
            assert_eq!(to_atto_delta("x", 1.0, up), Ok(1_000_000_000_000_000_000));
            assert_eq!(to_atto_delta("x", 0.0, up), Ok(0));
        }
        // Costs round up, budgets down (red team: 1.4999e-9 was charged 1e-9).
        assert_eq!(to_nano_epsilon("x", 1.4999e-9, true), Ok(2));
        assert_eq!(to_nano_epsilon("x", 1.4999e-9, false), Ok(1));
        assert_eq!(to_atto_delta("x", 4e-19, true), Ok(1));
        assert_eq!(to_atto_delta("x", 4e-19, false), Ok(0));
        for bad in [f64::NAN, f64::INFINITY, -1.0, 2e9] {
            assert!(to_nano_epsilon("x", bad, true).is_err(), "{bad}");
        }
        for bad in [f64::NAN, f64::NEG_INFINITY, -1e-9, 1.5] {
            assert!(to_atto_delta("x", bad, true).is_err(), "{bad}");
        }
        assert!(cost_units(&Cost {
            epsilon: 0.0,
            delta: 0.0
        })
        .is_err());
        assert!(cost_units(&Cost {
            epsilon: 1e-12,
            delta: 0.0
        })
        .is_err());
        assert_eq!(
            cost_units(&Cost {
                epsilon: 1.4999e-9,
                delta: 4e-19
            }),
            Ok((2, 1))
        );
        assert_eq!(
            cost_units(&Cost {
                epsilon: 1e-9,
                delta: 0.0
            }),
            Ok((1, 0))
        );
    }

    #[test]
    fn overspend_messages() {
        let err = Left {
            nano_epsilon: 500_000_000,
            atto_delta: 0,
            period_ends_ms: None,
        }
        .check(1_000_000_000, 0, "analyst")
        .expect_err("too much");
        assert_eq!(
            err.to_string(),
            "the query needs epsilon 1.000 and the analyst's budget has 0.500 left"
        );
        let err = Left {
            nano_epsilon: 5_000_000_000,
            atto_delta: 0,
            period_ends_ms: None,
        }
        .check(1_000_000_000, 1_000_000_000_000, "collaboration")
        .expect_err("too much delta");
        assert_eq!(
            err.to_string(),
            "the query needs delta 1e-6 and the collaboration's budget has 0e0 left"
        );
    }
}
