//! Collaborations and their versions.

use airlock_protocol::AuditEvent;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::{SqlContext, TxError};
use crate::{
    append_event_in, check_nul, check_text, in_tx, now_ms, sha256_hex, ApprovalRecord,
    CollabRecord, Store, StoreError,
};

const SELECT_CURRENT: &str = "SELECT v.name, c.id, v.version, v.toml, v.sha256, v.created_by, \
     v.created_at_ms FROM collaborations c JOIN collaboration_versions v \
     ON v.name = c.name AND v.version = c.version";

fn collab_from_row(row: &AnyRow) -> Result<CollabRecord, TxError> {
    let get = |err| TxError::Sql {
        what: "read a collaboration",
        err,
    };
    Ok(CollabRecord {
        name: row.try_get("name").map_err(get)?,
        id: row.try_get("id").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        toml: row.try_get("toml").map_err(get)?,
        sha256: row.try_get("sha256").map_err(get)?,
        created_by: row.try_get("created_by").map_err(get)?,
        created_at_ms: row.try_get("created_at_ms").map_err(get)?,
    })
}

impl Store {
    /// Creates collaboration `name` (id `collab_id`) at version 1 from
    /// `toml`, audited as `collaboration.created` (payload: id, version,
    /// sha256). [`StoreError::Conflict`] if the name exists.
    pub async fn create_collaboration(
        &self,
        name: &str,
        collab_id: &str,
        toml: &str,
        by_member: &str,
    ) -> Result<CollabRecord, StoreError> {
        check_text("collaboration name", name)?;
        check_text("collaboration id", collab_id)?;
        check_nul("collaboration definition", toml)?;
        check_text("member", by_member)?;
        let sha256 = sha256_hex(toml.as_bytes());
        in_tx!(self, |tx| {
            let exists: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM collaborations WHERE name = $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await
                    .ctx("look up a collaboration")?;
            if exists > 0 {
                return Err(
                    StoreError::Conflict(format!("collaboration {name:?} already exists")).into(),
                );
            }
            let at = now_ms();
            sqlx::query(
                "INSERT INTO collaborations (name, id, version, created_at_ms) \
                 VALUES ($1, $2, 1, $3)",
            )
            .bind(name)
            .bind(collab_id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .ctx("store a collaboration")?;
            insert_version(&mut tx, name, 1, toml, &sha256, by_member, at).await?;
            append_event_in(
                &mut tx,
                name,
                by_member,
                &AuditEvent::CollaborationCreated {
                    id: collab_id.to_string(),
                    version: 1,
                    sha256: sha256.clone(),
                },
            )
            .await?;
            CollabRecord {
                name: name.to_owned(),
                id: collab_id.to_owned(),
                version: 1,
                toml: toml.to_owned(),
                sha256: sha256.clone(),
                created_by: by_member.to_owned(),
                created_at_ms: at,
            }
        })
    }

    /// Stores `toml` as the next version of collaboration `name`, audited
    /// as `collaboration.applied` (payload: version, sha256).
    /// [`StoreError::NotFound`] if there is no such collaboration.
    pub async fn apply_collaboration(
        &self,
        name: &str,
        toml: &str,
        by_member: &str,
    ) -> Result<CollabRecord, StoreError> {
        check_nul("collaboration definition", toml)?;
        check_text("member", by_member)?;
        let sha256 = sha256_hex(toml.as_bytes());
        in_tx!(self, |tx| {
            // The guarded increment also locks the row (PostgreSQL), so
            // concurrent applies take turns.
            let bumped =
                sqlx::query("UPDATE collaborations SET version = version + 1 WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .ctx("bump a collaboration's version")?;
            if bumped.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("collaboration {name:?}")).into());
            }
            let (id, version): (String, i64) =
                sqlx::query_as("SELECT id, version FROM collaborations WHERE name = $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await
                    .ctx("read a collaboration")?;
            let at = now_ms();
            insert_version(&mut tx, name, version, toml, &sha256, by_member, at).await?;
            append_event_in(
                &mut tx,
                name,
                by_member,
                &AuditEvent::CollaborationApplied {
                    version,
                    sha256: sha256.clone(),
                },
            )
            .await?;
            CollabRecord {
                name: name.to_owned(),
                id,
                version,
                toml: toml.to_owned(),
                sha256: sha256.clone(),
                created_by: by_member.to_owned(),
                created_at_ms: at,
            }
        })
    }

    /// The current (highest) version of collaboration `name`.
    pub async fn collaboration(&self, name: &str) -> Result<Option<CollabRecord>, StoreError> {
        let row = sqlx::query(&format!("{SELECT_CURRENT} WHERE c.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .ctx("read a collaboration")?;
        Ok(row.as_ref().map(collab_from_row).transpose()?)
    }

    /// The current version of every collaboration, by name (byte order).
    pub async fn collaborations(&self) -> Result<Vec<CollabRecord>, StoreError> {
        let rows = sqlx::query(SELECT_CURRENT)
            .fetch_all(&self.pool)
            .await
            .ctx("list collaborations")?;
        let mut out = rows
            .iter()
            .map(collab_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // Sorted here, not in SQL, so both backends agree whatever the
        // database's collation.
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every version of collaboration `name`, oldest first (empty if there
    /// is no such collaboration).
    pub async fn collaboration_versions(
        &self,
        name: &str,
    ) -> Result<Vec<CollabRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.name, c.id, v.version, v.toml, v.sha256, v.created_by, v.created_at_ms \
             FROM collaboration_versions v JOIN collaborations c ON c.name = v.name \
             WHERE v.name = $1 ORDER BY v.version",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .ctx("list a collaboration's versions")?;
        Ok(rows
            .iter()
            .map(collab_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }
}

impl Store {
    /// Records `member`'s decision on version `version` (with text hash
    /// `sha256`) of collaboration `name`, replacing an earlier decision on
    /// the same version, audited as `collaboration.approved` or
    /// `collaboration.refused` (payload: version, sha256, and the reason of
    /// a refusal). The caller checks the signature; this only stores it.
    pub async fn record_approval(&self, a: &ApprovalRecord) -> Result<(), StoreError> {
        check_text("member", &a.member)?;
        check_nul("approval signature", &a.signature)?;
        check_nul("reason", &a.reason)?;
        in_tx!(self, |tx| {
            sqlx::query(
                "DELETE FROM collaboration_approvals WHERE collab = $1 AND version = $2 AND member = $3",
            )
            .bind(&a.collab)
            .bind(a.version)
            .bind(&a.member)
            .execute(&mut *tx)
            .await
            .ctx("replace an approval")?;
            sqlx::query(
                "INSERT INTO collaboration_approvals \
                 (collab, sha256, member, version, decision, signature, reason, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&a.collab)
            .bind(&a.sha256)
            .bind(&a.member)
            .bind(a.version)
            .bind(if a.approved { "approved" } else { "refused" })
            .bind(&a.signature)
            .bind(&a.reason)
            .bind(a.at_ms)
            .execute(&mut *tx)
            .await
            .ctx("store an approval")?;
            let event = if a.approved {
                AuditEvent::CollaborationApproved {
                    version: a.version,
                    sha256: a.sha256.clone(),
                }
            } else {
                AuditEvent::CollaborationRefused {
                    version: a.version,
                    sha256: a.sha256.clone(),
                    reason: a.reason.clone(),
                }
            };
            append_event_in(&mut tx, &a.collab, &a.member, &event).await?;
        })
    }

    /// Every decision on collaboration `name`'s versions, oldest first.
    pub async fn approvals(&self, name: &str) -> Result<Vec<ApprovalRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT collab, sha256, member, version, decision, signature, reason, at_ms \
             FROM collaboration_approvals WHERE collab = $1 ORDER BY at_ms, version",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .ctx("list approvals")?;
        let get = |err| TxError::Sql {
            what: "read an approval",
            err,
        };
        let mut out = Vec::new();
        for row in &rows {
            let decision: String = row.try_get("decision").map_err(get)?;
            out.push(ApprovalRecord {
                collab: row.try_get("collab").map_err(get)?,
                sha256: row.try_get("sha256").map_err(get)?,
                member: row.try_get("member").map_err(get)?,
                version: row.try_get("version").map_err(get)?,
                approved: decision == "approved",
                signature: row.try_get("signature").map_err(get)?,
                reason: row.try_get("reason").map_err(get)?,
                at_ms: row.try_get("at_ms").map_err(get)?,
            });
        }
        Ok(out)
    }
}

async fn insert_version(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    version: i64,
    toml: &str,
    sha256: &str,
    by_member: &str,
    at: i64,
) -> Result<(), TxError> {
    sqlx::query(
        "INSERT INTO collaboration_versions (name, version, toml, sha256, created_by, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(name)
    .bind(version)
    .bind(toml)
    .bind(sha256)
    .bind(by_member)
    .bind(at)
    .execute(&mut *conn)
    .await
    .ctx("store a collaboration version")?;
    Ok(())
}
