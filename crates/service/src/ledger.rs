//! The privacy-budget ledgers a query under differential privacy is debited
//! from: the hub's (its store, or for a collaboration run in one process an
//! embedded SQLite file beside its configuration, `airlock-ledger.sqlite`),
//! and each data owner's node's own ([`NodeStoreLedger`]: an embedded
//! SQLite file in the node's state directory), both through [`debit_in`].
//!
//! A debit is a committed transaction (SQLite: WAL with `synchronous=FULL`;
//! Postgres: its commit) before any fragment is sent, so a crash after it
//! never refunds it; concurrent debits never overspend (see
//! `airlock-store`'s budget module).

use std::path::Path;

use airlock_guard::dp::DpCost;
use airlock_hub::{HubError, Ledger};
use airlock_node::{DebitError, Ledger as NodeLedger};
use airlock_policy::{Collaboration, Control, Refusal};
use airlock_store::{now_ms, Budget, Cost, Remaining, Store, StoreError};
use futures::future::BoxFuture;

/// The file name of the embedded ledger beside a collaboration file.
pub const EMBEDDED_LEDGER: &str = "airlock-ledger.sqlite";

/// Debits one query of one collaboration.
#[derive(Debug, Clone)]
pub struct StoreLedger {
    store: Store,
    collab: String,
    query_id: String,
}

impl StoreLedger {
    /// The ledger of `collab` in `store`, for the query `query_id`.
    pub fn new(store: Store, collab: &str, query_id: &str) -> Self {
        StoreLedger {
            store,
            collab: collab.to_string(),
            query_id: query_id.to_string(),
        }
    }
}

/// Debits `cost` for `analyst`'s query `query` in `collab`'s budget in
/// `store`: the one debit the hub's ledger and each node's own call.
pub async fn debit_in(
    store: &Store,
    collab: &str,
    analyst: &str,
    query: &str,
    cost: DpCost,
) -> Result<(), DebitError> {
    let cost = Cost {
        epsilon: cost.epsilon,
        delta: cost.delta,
    };
    let (store, collab, analyst, query) = (
        store.clone(),
        collab.to_string(),
        analyst.to_string(),
        query.to_string(),
    );
    // In a task of its own: a caller that goes away (a query cancelled, a
    // node's other fragment refused) never drops the transaction midway.
    tokio::spawn(async move {
        store
            .debit(&collab, &analyst, &query, &cost, now_ms())
            .await
    })
    .await
    .map_err(|e| DebitError::Failed(format!("the debit stopped: {e}")))?
    .map(|_| ())
    .map_err(debit_error)
}

/// A store's refusal to debit: overspending, or a cost the budget cannot
/// take (none set, below its unit), is a budget refusal; anything else a
/// failure.
fn debit_error(e: StoreError) -> DebitError {
    match e {
        e @ StoreError::Overspend { .. } => DebitError::Spent(e.to_string()),
        StoreError::BadInput(m) => DebitError::Spent(m),
        e => DebitError::Failed(e.to_string()),
    }
}

impl Ledger for StoreLedger {
    fn debit<'a>(&'a self, member: &'a str, cost: DpCost) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async move {
            match debit_in(&self.store, &self.collab, member, &self.query_id, cost).await {
                Ok(()) => Ok(()),
                Err(DebitError::Spent(reason)) => Err(HubError::Refused {
                    refusal: Refusal::new(Control::PrivacyBudget, reason),
                    node: None,
                }),
                Err(DebitError::Replay) => {
                    Err(HubError::Failed("the query was debited before".into()))
                }
                Err(DebitError::Failed(e)) => Err(HubError::Failed(format!(
                    "the privacy budget could not be debited: {e}"
                ))),
            }
        })
    }
}

/// A node's own ledger of one collaboration (`airlock_node::ledger`): an
/// embedded SQLite file in the node's state directory for it, opened with
/// [`open_embedded`], debited with the same code as the hub's.
#[derive(Debug, Clone)]
pub struct NodeStoreLedger {
    store: Store,
    collab: String,
}

impl NodeStoreLedger {
    /// Opens (or creates) the ledger of `collab` (its file's text `toml`)
    /// in `dir`, the node's state for the collaboration, setting the
    /// budgets its `[privacy]` section declares; `None` without one.
    pub async fn open(
        dir: &Path,
        collab: &Collaboration,
        toml: &str,
    ) -> Result<Option<NodeStoreLedger>, StoreError> {
        if collab.config().privacy.is_none() {
            return Ok(None);
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::BadInput(format!("cannot create {}: {e}", dir.display())))?;
        let store = open_embedded(dir, collab, toml).await?;
        Ok(Some(NodeStoreLedger {
            store,
            collab: collab.name().to_string(),
        }))
    }

    /// The store it debits (what is left, for the node's member).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl NodeLedger for NodeStoreLedger {
    fn debit<'a>(
        &'a self,
        analyst: &'a str,
        query: &'a str,
        table: &'a str,
        cost: DpCost,
    ) -> BoxFuture<'a, Result<(), DebitError>> {
        Box::pin(async move {
            let cost = Cost {
                epsilon: cost.epsilon,
                delta: cost.delta,
            };
            let (store, collab, analyst, query, table) = (
                self.store.clone(),
                self.collab.clone(),
                analyst.to_string(),
                query.to_string(),
                table.to_string(),
            );
            // In a task of its own, as in `debit_in`.
            let debited = tokio::spawn(async move {
                store
                    .debit_fragment(&collab, &analyst, &query, &table, &cost, now_ms())
                    .await
            })
            .await
            .map_err(|e| DebitError::Failed(format!("the debit stopped: {e}")))?;
            match debited {
                Ok(_) => Ok(()),
                Err(StoreError::Conflict(_)) => Err(DebitError::Replay),
                Err(e) => Err(debit_error(e)),
            }
        })
    }
}

/// Sets the budgets `collab`'s `[privacy]` section declares (the
/// collaboration's and each listed analyst's). Replacing a budget keeps
/// what was spent in the current period.
pub async fn sync_budgets(
    store: &Store,
    collab: &Collaboration,
    by: &str,
) -> Result<(), StoreError> {
    let Some(p) = &collab.config().privacy else {
        return Ok(());
    };
    let refresh_period_ms = p.refresh_period_ms();
    // The analysts' first: a debit needs the collaboration's budget, so
    // once that is set every analyst's is too (a process that opens the
    // ledger meanwhile never debits past an analyst's budget).
    for a in &p.analysts {
        store
            .set_budget(
                collab.name(),
                Some(&a.name),
                &Budget {
                    epsilon: a.epsilon,
                    delta: a.delta,
                    refresh_period_ms,
                },
                by,
            )
            .await?;
    }
    store
        .set_budget(
            collab.name(),
            None,
            &Budget {
                epsilon: p.epsilon,
                delta: p.delta,
                refresh_period_ms,
            },
            by,
        )
        .await?;
    Ok(())
}

/// Opens the embedded ledger beside the collaboration file `file` (in
/// `dir`), registering the collaboration and its budgets the first time and
/// whenever the file changes.
pub async fn open_embedded(
    dir: &Path,
    collab: &Collaboration,
    toml: &str,
) -> Result<Store, StoreError> {
    let path = dir.join(EMBEDDED_LEDGER);
    let store = Store::open(&format!("sqlite:{}", path.display())).await?;
    let by = "local";
    let changed = match store.collaboration(collab.name()).await? {
        // Several processes may open a new ledger at once: the one that
        // loses the race to create it goes on with the one created (setting
        // the budgets is idempotent and never touches what was spent).
        None => match store
            .create_collaboration(collab.name(), collab.id(), toml, by)
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) => true,
            Err(e) => return Err(e),
        },
        Some(rec) if rec.toml != toml => {
            store.apply_collaboration(collab.name(), toml, by).await?;
            true
        }
        // Another process may have created it and not yet set its
        // budgets: set them (idempotent) rather than debit without one.
        Some(_) => matches!(
            store.remaining(collab.name(), None, now_ms()).await,
            Err(StoreError::BadInput(_))
        ),
    };
    if changed {
        sync_budgets(&store, collab, by).await?;
    }
    Ok(store)
}

/// What `member` may still spend in `collab`, or `None` if the
/// collaboration has no budget.
pub async fn remaining(
    store: &Store,
    collab: &str,
    member: Option<&str>,
) -> Result<Option<Remaining>, StoreError> {
    match store.remaining(collab, member, now_ms()).await {
        Ok(r) => Ok(Some(r)),
        Err(StoreError::BadInput(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
