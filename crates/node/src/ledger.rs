//! The node's own privacy-budget ledger: the one the hub cannot skip.
//!
//! For every fragment over a table under differential privacy, the node
//! prices the query itself, from its own copy of the rules and the fragment
//! (an analysis: its own guard's check of the SQL; a scan fragment: the
//! tables and selection it declares, [`airlock_guard::dp::scan_cost`]; a
//! crypto-mode step: [`airlock_guard::crypto_cost`]; each the function the
//! hub's guard prices it with), and debits its own [`Ledger`] before it
//! reads a row. A debit is durable and never refunded; a cost the budget
//! does not cover is refused with [`Control::PrivacyBudget`], whatever the
//! hub says. A node with no ledger refuses every such fragment.
//!
//! The ledger itself is a port: a node service keeps it in its state
//! directory (`airlock_service::ledger::NodeStoreLedger`, the same budget
//! code as the hub's store), and in one process each member's node keeps
//! its own in its own state directory, never beside the collaboration file.

use airlock_guard::dp::DpCost;
use airlock_policy::{Collaboration, Control, Refusal};
use futures::future::BoxFuture;

use crate::NodeError;

/// Why a debit did not happen.
#[derive(Debug, Clone)]
pub enum DebitError {
    /// The budget does not cover the cost (a reason with no data value).
    Spent(String),
    /// The query already read this table on this node: a replay.
    Replay,
    /// The ledger could not be written: the fragment does not run.
    Failed(String),
}

/// Where a node debits the privacy cost of the fragments it serves.
pub trait Ledger: Send + Sync {
    /// Debits `cost` for `analyst`'s query `query` reading `table`:
    /// durably, before the node reads a row; concurrent debits never
    /// overspend. The query is charged once on this node however many of
    /// its tables it reads here, and a table read again under the same
    /// query is a [`DebitError::Replay`].
    fn debit<'a>(
        &'a self,
        analyst: &'a str,
        query: &'a str,
        table: &'a str,
        cost: DpCost,
    ) -> BoxFuture<'a, Result<(), DebitError>>;
}

/// Debits `cost` for a fragment of `table` from `ledger`, or refuses it.
pub(crate) async fn debit(
    ledger: Option<&dyn Ledger>,
    collab: &Collaboration,
    table: &str,
    analyst: &str,
    query: &str,
    cost: DpCost,
) -> Result<(), NodeError> {
    let rule = collab.table(table).map(|t| t.rule.kind());
    let refuse = |why: String| {
        NodeError::Refused(Refusal::new(Control::PrivacyBudget, why).table(table, rule))
    };
    let Some(ledger) = ledger else {
        return Err(refuse(
            "this table is under differential privacy and this node keeps no privacy budget ledger for the collaboration".into(),
        ));
    };
    match ledger.debit(analyst, query, table, cost).await {
        Ok(()) => Ok(()),
        Err(DebitError::Spent(why)) => Err(refuse(format!("on the owner's node: {why}"))),
        Err(DebitError::Replay) => Err(refuse(
            "on the owner's node: this query already read this table (a query reads each table once)".into(),
        )),
        Err(DebitError::Failed(why)) => {
            // The details (a path, a database message) stay in the
            // node's own log.
            eprintln!("node: the privacy budget ledger could not be debited: {why}");
            Err(NodeError::Local(
                "the node's privacy budget ledger could not be debited (see the node's log)".into(),
            ))
        }
    }
}
