//! The privacy-budget ledger a query under differential privacy is debited
//! from: the hub's store, or for a collaboration run in one process an
//! embedded SQLite file beside its configuration (`airlock-ledger.sqlite`).
//!
//! A debit is a committed transaction (SQLite: WAL with `synchronous=FULL`;
//! Postgres: its commit) before any fragment is sent, so a crash after it
//! never refunds it; concurrent debits never overspend (see
//! `airlock-store`'s budget module).

use std::path::Path;

use airlock_guard::dp::DpCost;
use airlock_hub::{HubError, Ledger};
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

fn budget_refusal(reason: String) -> HubError {
    HubError::Refused {
        refusal: Refusal::new(Control::PrivacyBudget, reason),
        node: None,
    }
}

impl Ledger for StoreLedger {
    fn debit<'a>(&'a self, member: &'a str, cost: DpCost) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async move {
            let cost = Cost {
                epsilon: cost.epsilon,
                delta: cost.delta,
            };
            match self
                .store
                .debit(&self.collab, member, &self.query_id, &cost, now_ms())
                .await
            {
                Ok(_) => Ok(()),
                Err(e @ StoreError::Overspend { .. }) => Err(budget_refusal(e.to_string())),
                Err(StoreError::BadInput(m)) => Err(budget_refusal(m)),
                Err(e) => Err(HubError::Failed(format!(
                    "the privacy budget could not be debited: {e}"
                ))),
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
        Some(_) => false,
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
