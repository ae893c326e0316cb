//! Queries: submission, lifecycle, results.

use airlock_protocol::audit::{DeliveredBy, Transition};
use airlock_protocol::AuditEvent;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;

use crate::error::{SqlContext, TxError};
use crate::{
    append_event_in, check_nul, check_text, in_tx, now_ms, random_hex, sha256_hex, QueryRecord,
    QueryState, Store, StoreError,
};

/// The detail of a released query whose result the retention period deleted.
pub const RESULT_DELETED: &str = "the result was deleted at the end of the retention period";

/// The detail [`Store::fail_interrupted`] gives the queries it fails.
pub const INTERRUPTED: &str = "interrupted: the hub restarted";

const SELECT_QUERY: &str = "SELECT id, collab, member, sql_text, state, detail, row_count, \
     created_at_ms, updated_at_ms FROM queries";

fn query_from_row(row: &AnyRow) -> Result<QueryRecord, TxError> {
    let get = |err| TxError::Sql {
        what: "read a query",
        err,
    };
    let state: String = row.try_get("state").map_err(get)?;
    let state = state.parse().map_err(|_| {
        StoreError::Database(format!("a stored query has the unknown state {state:?}"))
    })?;
    Ok(QueryRecord {
        id: row.try_get("id").map_err(get)?,
        collab: row.try_get("collab").map_err(get)?,
        member: row.try_get("member").map_err(get)?,
        sql: row.try_get("sql_text").map_err(get)?,
        state,
        detail: row.try_get("detail").map_err(get)?,
        rows: row.try_get("row_count").map_err(get)?,
        created_at_ms: row.try_get("created_at_ms").map_err(get)?,
        updated_at_ms: row.try_get("updated_at_ms").map_err(get)?,
    })
}

async fn load(conn: &mut AnyConnection, id: &str) -> Result<QueryRecord, TxError> {
    let row = sqlx::query(&format!("{SELECT_QUERY} WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .ctx("read a query")?;
    match row {
        Some(row) => query_from_row(&row),
        None => Err(StoreError::NotFound(format!("query {id:?}")).into()),
    }
}

fn bad_transition(from: QueryState, to: QueryState) -> TxError {
    StoreError::BadTransition {
        from: from.as_str().to_owned(),
        to: to.as_str().to_owned(),
    }
    .into()
}

/// Moves query `q` (as loaded in this transaction) to `to` with the guarded
/// update: only if it is still in the state it was loaded in. Updates `q`.
async fn guarded_move(
    conn: &mut AnyConnection,
    q: &mut QueryRecord,
    to: QueryState,
    detail: Option<&str>,
    rows: Option<i64>,
) -> Result<(), TxError> {
    if !q.state.can_become(to) {
        return Err(bad_transition(q.state, to));
    }
    let at = now_ms().max(q.updated_at_ms);
    let moved = sqlx::query(
        "UPDATE queries SET state = $1, detail = $2, row_count = $3, updated_at_ms = $4 \
         WHERE id = $5 AND state = $6",
    )
    .bind(to.as_str())
    .bind(detail)
    .bind(rows)
    .bind(at)
    .bind(&q.id)
    .bind(q.state.as_str())
    .execute(&mut *conn)
    .await
    .ctx("update a query's state")?;
    if moved.rows_affected() == 0 {
        // Another caller moved it first: report the state it is in now.
        let now = load(conn, &q.id).await?;
        return Err(bad_transition(now.state, to));
    }
    q.state = to;
    q.detail = detail.map(str::to_owned);
    q.rows = rows;
    q.updated_at_ms = at;
    Ok(())
}

impl Store {
    /// Records a query `member` submits in collaboration `collab`, in state
    /// `Submitted`, audited as `query.submitted` (payload: query, state,
    /// sql). [`StoreError::NotFound`] if the collaboration does not exist.
    pub async fn submit_query(
        &self,
        collab: &str,
        member: &str,
        sql: &str,
    ) -> Result<QueryRecord, StoreError> {
        check_text("collaboration name", collab)?;
        check_text("member", member)?;
        check_nul("query SQL", sql)?;
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
            let id = random_hex(16)?;
            let at = now_ms();
            sqlx::query(
                "INSERT INTO queries (id, collab, member, sql_text, state, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(&id)
            .bind(collab)
            .bind(member)
            .bind(sql)
            .bind(QueryState::Submitted.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await
            .ctx("store a query")?;
            append_event_in(
                &mut tx,
                collab,
                member,
                &AuditEvent::QuerySubmitted {
                    query: id.clone(),
                    state: QueryState::Submitted.as_str().to_string(),
                    sql: sql.to_string(),
                },
            )
            .await?;
            QueryRecord {
                id,
                collab: collab.to_owned(),
                member: member.to_owned(),
                sql: sql.to_owned(),
                state: QueryState::Submitted,
                detail: None,
                rows: None,
                created_at_ms: at,
                updated_at_ms: at,
            }
        })
    }

    /// Moves query `id` to `to`, setting its detail to `detail`, audited as
    /// `query.<to>` (actor: the query's member; payload: query, state,
    /// detail) in the same transaction. [`StoreError::BadTransition`] if the
    /// move is not allowed from its state, or another caller moved it first;
    /// [`StoreError::NotFound`] for an unknown id. A query becomes
    /// `Released` only with its result: [`Store::release`].
    pub async fn transition(
        &self,
        id: &str,
        to: QueryState,
        detail: Option<&str>,
    ) -> Result<QueryRecord, StoreError> {
        if to == QueryState::Released {
            return Err(StoreError::BadInput(
                "a query is released only with its result (Store::release)".into(),
            ));
        }
        if let Some(detail) = detail {
            check_nul("detail", detail)?;
        }
        in_tx!(self, |tx| {
            let mut q = load(&mut tx, id).await?;
            guarded_move(&mut tx, &mut q, to, detail, None).await?;
            append_event_in(
                &mut tx,
                &q.collab,
                &q.member,
                &transition_event(
                    to,
                    Transition {
                        query: q.id.clone(),
                        state: to.as_str().to_string(),
                        detail: detail.map(str::to_string),
                    },
                )?,
            )
            .await?;
            q
        })
    }

    /// Moves query `id` from `Running` to `Released`, storing its result
    /// (Arrow IPC bytes) and row count, audited as `query.released`
    /// (payload: query, state, detail, rows, result_sha256), all in one
    /// transaction. Succeeds exactly once per query: a second call, even a
    /// concurrent one, gets [`StoreError::BadTransition`].
    pub async fn release(
        &self,
        id: &str,
        result: &[u8],
        rows: i64,
    ) -> Result<QueryRecord, StoreError> {
        if rows < 0 {
            return Err(StoreError::BadInput(
                "a row count cannot be negative".into(),
            ));
        }
        let result_sha256 = sha256_hex(result);
        in_tx!(self, |tx| {
            let mut q = load(&mut tx, id).await?;
            guarded_move(&mut tx, &mut q, QueryState::Released, None, Some(rows)).await?;
            sqlx::query("INSERT INTO query_results (query_id, data) VALUES ($1, $2)")
                .bind(id)
                .bind(result)
                .execute(&mut *tx)
                .await
                .ctx("store a query result")?;
            append_event_in(
                &mut tx,
                &q.collab,
                &q.member,
                &AuditEvent::QueryReleased {
                    query: q.id.clone(),
                    state: QueryState::Released.as_str().to_string(),
                    detail: None,
                    rows,
                    result_sha256: result_sha256.clone(),
                },
            )
            .await?;
            q
        })
    }

    /// Moves query `id` from `Running` to `Released` for a result the
    /// receiving member's node has already written to its destination: the
    /// hub stores no copy. Audited as `query.released` (with the result's
    /// SHA-256) and `result.delivered` (`written`: destination, location,
    /// rows, the file's hash), with `detail` saying where it went, all in one
    /// transaction, so the query is never seen released but undelivered.
    pub async fn release_delivered(
        &self,
        id: &str,
        rows: i64,
        result_sha256: &str,
        detail: &str,
        written: &DeliveredBy,
    ) -> Result<QueryRecord, StoreError> {
        check_text("delivery detail", detail)?;
        if rows < 0 {
            return Err(StoreError::BadInput(
                "a row count cannot be negative".into(),
            ));
        }
        in_tx!(self, |tx| {
            let mut q = load(&mut tx, id).await?;
            guarded_move(
                &mut tx,
                &mut q,
                QueryState::Released,
                Some(detail),
                Some(rows),
            )
            .await?;
            append_event_in(
                &mut tx,
                &q.collab,
                &q.member,
                &AuditEvent::QueryReleased {
                    query: q.id.clone(),
                    state: QueryState::Released.as_str().to_string(),
                    detail: Some(detail.to_string()),
                    rows,
                    result_sha256: result_sha256.to_string(),
                },
            )
            .await?;
            append_event_in(
                &mut tx,
                &q.collab,
                &q.member,
                &AuditEvent::ResultDelivered {
                    query: q.id.clone(),
                    result_sha256: result_sha256.to_string(),
                    by: written.clone(),
                },
            )
            .await?;
            q
        })
    }

    /// Query `id`, if it exists.
    pub async fn query(&self, id: &str) -> Result<Option<QueryRecord>, StoreError> {
        let row = sqlx::query(&format!("{SELECT_QUERY} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .ctx("read a query")?;
        Ok(row.as_ref().map(query_from_row).transpose()?)
    }

    /// The queries of collaboration `collab`, oldest first.
    pub async fn queries(&self, collab: &str) -> Result<Vec<QueryRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_QUERY} WHERE collab = $1 ORDER BY created_at_ms, id"
        ))
        .bind(collab)
        .fetch_all(&self.pool)
        .await
        .ctx("list queries")?;
        Ok(rows
            .iter()
            .map(query_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The result of query `id`, if it was released.
    pub async fn result(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT data FROM query_results WHERE query_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .ctx("read a query result")?,
        )
    }

    /// Retention: deletes the results of `collab`'s queries released before
    /// `cutoff_ms`, each deletion audited as `result.deleted` (payload:
    /// query, released_at_ms, cutoff_ms, result_sha256) in the same
    /// transaction; the query keeps its state and row count, its detail
    /// says the result was deleted. Returns the queries whose results were
    /// deleted, oldest first; a second call deletes nothing.
    pub async fn expire_results(
        &self,
        collab: &str,
        cutoff_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        check_text("collaboration name", collab)?;
        in_tx!(self, |tx| {
            let due: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
                "SELECT q.id, q.updated_at_ms, r.data FROM queries q \
                 JOIN query_results r ON r.query_id = q.id \
                 WHERE q.collab = $1 AND q.state = 'released' AND q.updated_at_ms < $2 \
                 ORDER BY q.updated_at_ms, q.id",
            )
            .bind(collab)
            .bind(cutoff_ms)
            .fetch_all(&mut *tx)
            .await
            .ctx("find expired results")?;
            let mut ids = Vec::with_capacity(due.len());
            for (id, released_at_ms, data) in due {
                sqlx::query("DELETE FROM query_results WHERE query_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .ctx("delete an expired result")?;
                sqlx::query("UPDATE queries SET detail = $1 WHERE id = $2")
                    .bind(RESULT_DELETED)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .ctx("mark a deleted result")?;
                append_event_in(
                    &mut tx,
                    collab,
                    "hub",
                    &AuditEvent::ResultDeleted {
                        query: id.clone(),
                        released_at_ms,
                        cutoff_ms,
                        result_sha256: sha256_hex(&data),
                    },
                )
                .await?;
                ids.push(id);
            }
            ids
        })
    }

    /// For hub start: moves every query not in a terminal state to `Failed`
    /// with detail [`INTERRUPTED`] (each audited as `query.failed`), and
    /// returns their ids, oldest first.
    pub async fn fail_interrupted(&self) -> Result<Vec<String>, StoreError> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM queries WHERE state IN ('submitted', 'checked', 'running') \
             ORDER BY created_at_ms, id",
        )
        .fetch_all(&self.pool)
        .await
        .ctx("list unfinished queries")?;
        let mut failed = Vec::with_capacity(ids.len());
        for (id,) in ids {
            match self
                .transition(&id, QueryState::Failed, Some(INTERRUPTED))
                .await
            {
                Ok(_) => failed.push(id),
                // Finished meanwhile: nothing to fail.
                Err(StoreError::BadTransition { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(failed)
    }
}

/// The audit event of a query's move to `state` with no result
/// (submitting and releasing have their own, with more fields).
fn transition_event(state: QueryState, t: Transition) -> Result<AuditEvent, TxError> {
    Ok(match state {
        QueryState::Checked => AuditEvent::QueryChecked(t),
        QueryState::Running => AuditEvent::QueryRunning(t),
        QueryState::Refused => AuditEvent::QueryRefused(t),
        QueryState::Failed => AuditEvent::QueryFailed(t),
        QueryState::Submitted | QueryState::Released => {
            return Err(StoreError::BadInput(format!(
                "a query does not move to {} by a transition",
                state.as_str()
            ))
            .into())
        }
    })
}
