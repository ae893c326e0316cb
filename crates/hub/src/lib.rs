//! # airlock-hub: the control plane and the executor
//!
//! The hub holds no member data and no pseudonym key. For a query it:
//!
//! ```text
//!  member, SQL ─ability─▶ guard (check ▸ rewrite ▸ split) ─▶ fragments ─▶ nodes
//!                                                   nodes ─▶ Arrow IPC ─▶ executor ─▶ released rows
//! ```
//!
//! Nodes are reached through [`NodeClient`]: in one process a direct call,
//! through `airlock up` Arrow Flight over mutual TLS. The executor is an
//! ephemeral DataFusion session per query that joins fragments on
//! pseudonyms, aggregates and applies the threshold; nothing it holds
//! outlives the query.
//!
//! Around the query's route, the rest of the control plane, each behind
//! ports so it is tested without sockets or a database:
//! - [`sync`]: a collaboration's approved version installed on every
//!   provider's node ([`NodeAdmin`]) and the collaboration secret relayed sealed, building
//!   the [`Hub`] ([`Hub::sync`]);
//! - [`lifecycle`]: a prepared query marked running, run under a time
//!   limit, stored or delivered, or recorded as refused or failed
//!   ([`Hub::settle`], over [`QueryStore`] and [`Deliverer`]);
//! - both append to the audit chain through [`AuditLog`].

pub mod lifecycle;
pub mod sync;

pub use lifecycle::{Deliverer, Progress, QueryRef, QueryStore, Run, Settled, CANCELLED};
pub use sync::{AuditLog, NodeAdmin, SyncError, Version};

use std::collections::HashMap;
use std::fmt;

use airlock_guard::dp::DpCost;
use airlock_guard::{CheckedQuery, Guard, GuardError, QueryPlan};
use airlock_policy::{Ability, Collaboration, Control, Mode, QuerySpec, Refusal, Template};
use airlock_protocol::wire::Partitions;
use airlock_protocol::{CryptoFragment, CryptoRole, Fragment, Message, PsiRequest, PsiResponse};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::future::{try_join_all, BoxFuture};

/// What a node answers when it does not return rows.
#[derive(Debug, Clone)]
pub enum NodeFailure {
    /// The node refused the fragment on its own rules.
    Refused(Refusal),
    /// Anything else, in words with no data values.
    Failed(String),
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeFailure::Refused(r) => write!(f, "{r}"),
            NodeFailure::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// How the hub reaches members' nodes.
pub trait NodeClient: Send + Sync {
    /// Sends a fragment to `member`'s node; returns the rows it streamed
    /// back, by partition. How it travels (a Flight ticket, an in-process
    /// call) is the client's business: the hub deals in typed values.
    fn execute<'a>(
        &'a self,
        member: &'a str,
        fragment: &'a Fragment,
    ) -> BoxFuture<'a, Result<(SchemaRef, Partitions), NodeFailure>>;

    /// Relays one crypto-mode step to `member`'s node; returns its answer.
    /// The hub sees only blinded points and ciphertexts.
    fn psi<'a>(
        &'a self,
        member: &'a str,
        request: &'a PsiRequest,
    ) -> BoxFuture<'a, Result<PsiResponse, NodeFailure>>;

    /// Progress of a crypto-mode query: the step the hub relays next, or
    /// `None` once the query has ended (released, refused or failed).
    fn crypto_step(&self, _step: Option<&CryptoStep>) {}
}

/// One step of a crypto-mode query, as the hub reports it for progress:
/// its place, the node that runs it and what that node does. Nothing in it
/// depends on either member's data: the steps are fixed by the query's
/// shape (whose groups) and rules (differential privacy or k).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoStep {
    /// 1-based.
    pub index: usize,
    /// Steps of this query.
    pub total: usize,
    /// The member whose node runs the step.
    pub member: String,
    /// What the node does.
    pub what: &'static str,
}

impl fmt::Display for CryptoStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {}/{}: {}'s node {}",
            self.index, self.total, self.member, self.what
        )
    }
}

/// Tells the node client that a crypto-mode query ended, however it ends.
struct StepsEnd<'a>(&'a dyn NodeClient);

impl Drop for StepsEnd<'_> {
    fn drop(&mut self) {
        self.0.crypto_step(None);
    }
}

/// Where a query's privacy cost is debited before it runs: durably, and
/// never refunded. A query without a DP cost is never sent here.
pub trait Ledger: Send + Sync {
    /// Debits `cost` for `member`'s query, or refuses it (with
    /// [`Control::PrivacyBudget`]) if the budget does not cover it.
    fn debit<'a>(&'a self, member: &'a str, cost: DpCost) -> BoxFuture<'a, Result<(), HubError>>;
}

/// A ledger for collaborations with no privacy budget: refuses every query
/// that has a privacy cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLedger;

impl Ledger for NoLedger {
    fn debit<'a>(&'a self, _member: &'a str, _cost: DpCost) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async {
            Err(HubError::Refused {
                refusal: Refusal::new(
                    Control::PrivacyBudget,
                    "this query needs a privacy budget and none is kept here",
                ),
                node: None,
            })
        })
    }
}

/// Why a query was not released.
#[derive(Debug)]
pub enum HubError {
    /// Refused, by the hub's guard (`node` is `None`) or by a member's node.
    Refused {
        /// The refusal.
        refusal: Refusal,
        /// The member whose node refused, if a node did.
        node: Option<String>,
    },
    /// The request is malformed (SQL syntax, unknown member).
    BadInput(String),
    /// Anything else.
    Failed(String),
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::Refused {
                refusal,
                node: None,
            } => write!(f, "{refusal}"),
            HubError::Refused {
                refusal,
                node: Some(m),
            } => write!(f, "{refusal} (refused by the node of '{m}')"),
            HubError::BadInput(m) => write!(f, "{m}"),
            HubError::Failed(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for HubError {}

impl From<GuardError> for HubError {
    fn from(e: GuardError) -> Self {
        match e {
            GuardError::Refused(refusal) => HubError::Refused {
                refusal,
                node: None,
            },
            GuardError::BadInput(m) => HubError::BadInput(m),
            GuardError::Internal(m) => HubError::Failed(m),
        }
    }
}

/// A released result.
#[derive(Debug, Clone)]
pub struct Released {
    /// Result schema.
    pub schema: SchemaRef,
    /// Result rows.
    pub batches: Vec<RecordBatch>,
}

impl Released {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A query the hub checked and planned, ready to run once
/// ([`Hub::prepare`], then [`Hub::run`]).
#[derive(Debug)]
pub struct Prepared {
    member: String,
    how: How,
}

#[derive(Debug)]
enum How {
    /// Fragments to the nodes, then the executor (or one node's analysis).
    Federated {
        checked: Box<CheckedQuery>,
        plan: Box<QueryPlan>,
    },
    /// Crypto mode: the steps between the two nodes.
    Crypto {
        fragment: Box<CryptoFragment>,
        cost: Option<DpCost>,
    },
}

impl Prepared {
    /// The member who asked.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// What the query costs under differential privacy, if anything.
    pub fn cost(&self) -> Option<DpCost> {
        match &self.how {
            How::Federated { checked, .. } => checked.dp.as_ref().map(|d| d.cost),
            How::Crypto { cost, .. } => *cost,
        }
    }
}

/// The hub of one collaboration.
#[derive(Debug)]
pub struct Hub {
    collab: Collaboration,
    guard: Guard,
    schemas: HashMap<String, SchemaRef>,
    /// The executor's memory pool for one query, in bytes.
    executor_memory: usize,
}

/// The executor's memory pool for one query unless a hub sets another.
pub const DEFAULT_EXECUTOR_MEMORY: usize = 2 * 1024 * 1024 * 1024;

impl Hub {
    /// A hub over `collab`, given the configured tables' schemas as the nodes
    /// published them.
    pub fn new(
        collab: Collaboration,
        schemas: &HashMap<String, SchemaRef>,
    ) -> Result<Self, HubError> {
        let guard = Guard::new(&collab, schemas)?;
        Ok(Hub {
            collab,
            guard,
            schemas: schemas.clone(),
            executor_memory: DEFAULT_EXECUTOR_MEMORY,
        })
    }

    /// The same hub with the query size limits `limits` and an executor
    /// memory pool of `executor_memory` bytes per query.
    pub fn with_limits(mut self, limits: airlock_guard::Limits, executor_memory: usize) -> Self {
        self.guard = self.guard.with_limits(limits);
        self.executor_memory = executor_memory;
        self
    }

    /// The configured tables' schemas, as the nodes published them.
    pub fn schemas(&self) -> &HashMap<String, SchemaRef> {
        &self.schemas
    }

    /// The collaboration.
    pub fn collaboration(&self) -> &Collaboration {
        &self.collab
    }

    /// A crypto-mode query: no executor. The hub relays the opaque
    /// messages of the asker's and the responder's nodes; the asker's node
    /// turns the released groups into the result.
    async fn crypto_query(
        &self,
        member: &str,
        fragment: CryptoFragment,
        cost: Option<DpCost>,
        nodes: &dyn NodeClient,
        ledger: &dyn Ledger,
    ) -> Result<Released, HubError> {
        // Under differential privacy the cost is debited before any node
        // reads a row.
        if let Some(cost) = cost {
            ledger.debit(member, cost).await?;
        }
        let mut session = [0u8; 16];
        getrandom::getrandom(&mut session)
            .map_err(|e| HubError::Failed(format!("no randomness: {e}")))?;
        let session = hex::encode(session);
        // The node of the side not grouped by matches, the other groups;
        // the asker's node makes the result. By the responder's groups
        // (`airlock_psi::grouped`): start (asker), respond, reblind,
        // finish, then without differential privacy check and release
        // (zero tests for k), and result. By the asker's groups
        // (`airlock_psi::tagged`, the responder's node counts): start
        // (responder), respond, reblind, then without differential privacy
        // check (asker) and release, and result. Each node refuses a step
        // its own state does not expect, whatever the hub says.
        let mut theirs = fragment.clone();
        theirs.role = CryptoRole::Responder;
        let asker_groups = fragment.groups_of == CryptoRole::Asker;
        // A query grouped by nothing has one group, whose items are not
        // tagged (`airlock_psi::tagged`).
        let tags = asker_groups && !fragment.group_columns.is_empty();
        let asker = fragment.asker.member.clone();
        let responder = fragment.responder.member.clone();
        let zero_tests = cost.is_none();
        let total = if asker_groups { 4 } else { 5 } + 2 * usize::from(zero_tests);
        let _end = StepsEnd(nodes);
        let step = |index: usize, who: String, req: PsiRequest| async move {
            let what = match &req {
                PsiRequest::Start { .. } => "reads its people and blinds them",
                PsiRequest::Respond { .. } if tags => {
                    "reads its people, blinds both lists and tags its groups"
                }
                PsiRequest::Respond { .. } => "reads its people, blinds both lists",
                PsiRequest::Reblind { .. } if asker_groups && zero_tests => {
                    "matches the two lists, counts by group under encryption and tests k"
                }
                PsiRequest::Reblind { .. } if asker_groups => {
                    "matches the two lists and counts by group under encryption"
                }
                PsiRequest::Reblind { .. } => "matches the two lists",
                PsiRequest::Finish { .. } if zero_tests => {
                    "sums by group under encryption and tests k"
                }
                PsiRequest::Finish { .. } => "sums by group under encryption",
                PsiRequest::Check { .. } => "proves which groups reach k",
                PsiRequest::Release { .. } => "releases the groups that reach k",
                PsiRequest::Result { .. } => "decrypts the released groups",
            };
            nodes.crypto_step(Some(&CryptoStep {
                index,
                total,
                member: who.clone(),
                what,
            }));
            let answer = nodes.psi(&who, &req).await.map_err(|f| match f {
                NodeFailure::Refused(refusal) => HubError::Refused {
                    refusal,
                    node: Some(who.clone()),
                },
                NodeFailure::Failed(m) => {
                    HubError::Failed(format!("the node of '{who}' failed: {m}"))
                }
            })?;
            Ok::<Message, HubError>(answer.message)
        };
        let (matcher, grouper, m_fragment, g_fragment) = if asker_groups {
            (responder.clone(), asker.clone(), theirs, fragment)
        } else {
            (asker.clone(), responder.clone(), fragment, theirs)
        };
        let m1 = step(
            1,
            matcher.clone(),
            PsiRequest::Start {
                session: session.clone(),
                fragment: m_fragment,
            },
        )
        .await?;
        let m2 = step(
            2,
            grouper.clone(),
            PsiRequest::Respond {
                fragment: g_fragment,
                message: m1,
            },
        )
        .await?;
        let mut last = step(
            3,
            matcher.clone(),
            PsiRequest::Reblind {
                session: session.clone(),
                message: m2,
            },
        )
        .await?;
        let mut index = 3;
        if !asker_groups {
            index += 1;
            last = step(
                index,
                grouper.clone(),
                PsiRequest::Finish {
                    session: session.clone(),
                    message: last,
                },
            )
            .await?;
        }
        if zero_tests {
            // The zero tests are opened by the asker's node by its own
            // groups, by the matcher's (the asker's too) otherwise: the
            // node that did not make them.
            let (opener, maker) = if asker_groups {
                (asker.clone(), responder.clone())
            } else {
                (matcher.clone(), grouper.clone())
            };
            let proofs = step(
                index + 1,
                opener,
                PsiRequest::Check {
                    session: session.clone(),
                    message: last,
                },
            )
            .await?;
            last = step(
                index + 2,
                maker,
                PsiRequest::Release {
                    session: session.clone(),
                    message: proofs,
                },
            )
            .await?;
        }
        let result = step(
            total,
            asker,
            PsiRequest::Result {
                session,
                message: last,
            },
        )
        .await?;
        let (schema, partitions) = airlock_protocol::wire::decode_partitions(result.0)
            .map_err(|_| HubError::Failed("the asker's node sent an unreadable result".into()))?;
        Ok(Released {
            schema,
            batches: partitions.into_iter().flatten().collect(),
        })
    }

    fn require_query(&self, member: &str) -> Result<(), HubError> {
        if self.collab.member(member).is_none() {
            return Err(HubError::BadInput(format!(
                "'{member}' is not a member of collaboration '{}'",
                self.collab.name()
            )));
        }
        if !self.collab.has_ability(member, Ability::Query) {
            return Err(HubError::Refused {
                refusal: Refusal::new(
                    Control::Ability,
                    format!("member '{member}' does not have the 'query' ability"),
                ),
                node: None,
            });
        }
        Ok(())
    }

    /// Checks ad hoc SQL for `member` and plans it, without running anything.
    pub async fn check(
        &self,
        member: &str,
        sql: &str,
    ) -> Result<(CheckedQuery, QueryPlan), HubError> {
        self.check_spec(member, &QuerySpec::sql(sql)).await
    }

    /// Static verification of a template for an owner's approval (see
    /// [`Guard::verify_template`]): how many checks passed, or why not.
    pub async fn verify_template(&self, template: &Template) -> Result<usize, Vec<String>> {
        self.guard.verify_template(template).await
    }

    /// Checks what `member` asks for (SQL or a template run) and plans it,
    /// without running anything.
    pub async fn check_spec(
        &self,
        member: &str,
        spec: &QuerySpec,
    ) -> Result<(CheckedQuery, QueryPlan), HubError> {
        self.require_query(member)?;
        let crypto = if self.collab.config().collaboration.mode == Mode::Crypto {
            Some(self.guard.check_crypto(spec, member).await?.0)
        } else {
            None
        };
        let checked = self.guard.check_spec(spec, member).await?;
        let mut plan = self.guard.split(&checked)?;
        plan.crypto = crypto;
        Ok((checked, plan))
    }

    /// Checks what `member` asks for once and plans it: the query as it
    /// will run. A refusal here costs nothing and reaches no node.
    pub async fn prepare(&self, member: &str, spec: &QuerySpec) -> Result<Prepared, HubError> {
        self.require_query(member)?;
        let how = if self.collab.config().collaboration.mode == Mode::Crypto {
            let (fragment, cost) = self.guard.check_crypto(spec, member).await?;
            How::Crypto {
                fragment: Box::new(fragment),
                cost,
            }
        } else {
            let checked = self.guard.check_spec(spec, member).await?;
            let plan = self.guard.split(&checked)?;
            How::Federated {
                checked: Box::new(checked),
                plan: Box::new(plan),
            }
        };
        Ok(Prepared {
            member: member.to_string(),
            how,
        })
    }

    /// Checks, plans and runs what `member` asks for (SQL or a template
    /// run) as query `query` (its id: 32 hex characters, the key of every
    /// node's ledger debit); returns the released rows. A query under differential
    /// privacy is debited from `ledger` before any fragment is sent.
    pub async fn query_spec(
        &self,
        query: &str,
        member: &str,
        spec: &QuerySpec,
        nodes: &dyn NodeClient,
        ledger: &dyn Ledger,
    ) -> Result<Released, HubError> {
        let prepared = self.prepare(member, spec).await?;
        self.run(query, prepared, nodes, ledger).await
    }

    /// Runs a prepared query: debits its cost under differential privacy,
    /// then sends its fragments (or relays the crypto-mode steps) and
    /// releases the result. Nothing is checked a second time here.
    pub async fn run(
        &self,
        query: &str,
        prepared: Prepared,
        nodes: &dyn NodeClient,
        ledger: &dyn Ledger,
    ) -> Result<Released, HubError> {
        let member = prepared.member.as_str();
        let (checked, plan) = match prepared.how {
            How::Crypto { fragment, cost } => {
                let fragment = CryptoFragment {
                    query: query.to_string(),
                    ..*fragment
                };
                return self
                    .crypto_query(member, fragment, cost, nodes, ledger)
                    .await;
            }
            How::Federated { checked, plan } => (checked, plan),
        };
        // The hub's debit refuses early and shows what is left; each
        // owner's node debits its own ledger too, before it reads a row,
        // and that one the hub cannot skip.
        if let Some(dp) = &checked.dp {
            ledger.debit(member, dp.cost).await?;
        }
        let fragments: Vec<(String, Fragment)> = plan
            .fragments
            .iter()
            .map(|pf| (pf.member.clone(), pf.fragment.clone().for_query(query)))
            .collect();
        let calls = fragments.iter().map(|(member, fragment)| async move {
            nodes.execute(member, fragment).await.map_err(|f| match f {
                NodeFailure::Refused(refusal) => HubError::Refused {
                    refusal,
                    node: Some(member.clone()),
                },
                NodeFailure::Failed(m) => {
                    HubError::Failed(format!("the node of '{member}' failed: {m}"))
                }
            })
        });
        let mut results = try_join_all(calls).await?;
        match &plan.executor {
            None => {
                let (schema, partitions) = results
                    .pop()
                    .ok_or_else(|| HubError::Failed("no fragment result".into()))?;
                let batches = partitions.into_iter().flatten().collect();
                Ok(Released { schema, batches })
            }
            Some(template) => {
                let (schema, rows) = airlock_exec::join::run(
                    template,
                    results,
                    self.executor_memory,
                    plan.per_person.as_ref(),
                )
                .await
                .map_err(|e| HubError::Failed(e.to_string()))?;
                // The query's own steps above the aggregate (or DP's
                // release) see only the rows that passed the threshold.
                let (schema, batches) =
                    airlock_exec::finish(plan.dp.as_ref(), plan.upper.as_ref(), rows, schema)
                        .await
                        .map_err(|e| HubError::Failed(e.to_string()))?;
                Ok(Released { schema, batches })
            }
        }
    }
}
