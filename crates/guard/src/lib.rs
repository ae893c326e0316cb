//! # airlock-guard: SQL to plan to check to rewrite to split
//!
//! The guard decides what a query may do before any data is touched:
//!
//! ```text
//!  SQL ─parse─▶ statement ─plan (schema-only tables)─▶ LogicalPlan
//!      ─check (every node, every expression)─▶ Checked   or   Refusal
//!      ─rewrite (COUNT(DISTINCT identity) >= k per row)─▶ LogicalPlan
//!      ─split─▶ one Fragment per scan (or one Analysis for a single table) + executor plan
//! ```
//!
//! The guard runs in the hub and, with the member's own rules, again in every
//! node: a node never trusts the plan it is sent. It does no IO: tables are
//! schema-only ([`EmptyTable`]) and nothing is executed here.

mod check;
mod crypto;
pub mod dp;
mod functions;
mod limits;
#[cfg(feature = "negative-control")]
pub mod negative_control;
mod rewrite;
mod split;
mod templates;
mod total;
mod upper;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use airlock_policy::{Collaboration, Control, QuerySpec, Refusal, Template};
use airlock_protocol::{Fragment, ScanFragment, TemplateRun};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::empty::EmptyTable;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::Analyzer;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement, TableFactor};

pub use check::{Checked, QueryKind, ScanRef};
pub use crypto::{
    cost as crypto_cost, orientation as crypto_orientation, public_groups as crypto_public_groups,
};
pub use functions::SCALAR_FUNCTIONS;
pub use limits::Limits;
pub use upper::{Upper, PLACEHOLDER};

use check::TableInfo;

/// The stack of the thread that parses and plans a query (reserved address
/// space; only what the recursion touches is used).
pub const PLANNING_STACK: usize = 512 * 1024 * 1024;

/// Why the guard did not accept a query.
#[derive(Debug)]
pub enum GuardError {
    /// The query breaks a rule.
    Refused(Refusal),
    /// The SQL is not valid (syntax, unknown column, type error).
    BadInput(String),
    /// A bug or an engine failure.
    Internal(String),
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::Refused(r) => write!(f, "{r}"),
            GuardError::BadInput(m) => write!(f, "bad query: {m}"),
            GuardError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for GuardError {}

impl From<Refusal> for GuardError {
    fn from(r: Refusal) -> Self {
        GuardError::Refused(r)
    }
}

fn internal(e: impl fmt::Display) -> GuardError {
    GuardError::Internal(e.to_string())
}

/// A query that passed the check, with its rewritten plan.
#[derive(Debug, Clone)]
pub struct CheckedQuery {
    /// The SQL as submitted.
    pub sql: String,
    /// Member who asked.
    pub querier: String,
    /// Aggregation (with its strictest k) or list.
    pub kind: QueryKind,
    /// Scans of configured tables in plan order.
    pub scans: Vec<ScanRef>,
    /// The plan with the threshold added (schema-only tables), up to the
    /// aggregate: the released rows; under differential privacy, the plan
    /// of exact bounded aggregates that the release (`airlock_exec`) turns into the
    /// released result. For a list query, the whole query.
    pub plan: LogicalPlan,
    /// The query's own steps above the aggregate, run over the released
    /// rows only (not under differential privacy, whose release runs them).
    pub upper: Option<Upper>,
    /// Under differential privacy: its cost and how to release it.
    pub dp: Option<dp::DpRelease>,
    /// The approved template it runs, with its bound parameters.
    pub template: Option<TemplateRun>,
    /// The purpose its output serves.
    pub purpose: Option<String>,
}

/// A fragment and the member whose node runs it.
#[derive(Debug, Clone)]
pub struct PlannedFragment {
    /// Member (owner of the table).
    pub member: String,
    /// What the node runs.
    pub fragment: Fragment,
}

/// How a checked query runs.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// Fragments, in the order the executor plan's scans read them.
    pub fragments: Vec<PlannedFragment>,
    /// The executor's plan; `None` when the whole analysis runs on one node.
    pub executor: Option<LogicalPlan>,
    /// Aggregation (with k) or list.
    pub kind: QueryKind,
    /// The query's steps above the aggregate, over the executor's released
    /// rows (a one-table analysis runs them on its node).
    pub upper: Option<Upper>,
    /// Under differential privacy: how the result is released (by the
    /// executor; a one-table analysis is released by its node, which adds
    /// the noise itself).
    pub dp: Option<dp::DpRelease>,
    /// In crypto mode: the asker's fragment; the nodes compute the result
    /// between them and `fragments` and `executor` are not used.
    pub crypto: Option<airlock_protocol::CryptoFragment>,
    /// Under differential privacy, what the executor keeps of each
    /// fragment before the join (`None` otherwise).
    pub per_person: Option<PerPerson>,
}

/// Under differential privacy, the executor keeps at most `rows` rows per
/// person (random ones) of each fragment before it joins them. The lower
/// plan bounds each person's rows again after the join (that bound is
/// what the noise is made for); this one bounds how much of the
/// executor's work and memory one person's rows can take, whatever a
/// member put into its own table for that person: 40,000 rows for one
/// guessed person would otherwise fill the executor's memory only when
/// that person joins (red team).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerPerson {
    /// Rows kept per person and fragment.
    pub rows: u64,
    /// Per fragment (in scan order), the position of its table's identity
    /// column among the fragment's columns.
    pub identity_columns: Vec<usize>,
}

impl fmt::Display for QueryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.crypto {
            writeln!(
                f,
                "crypto mode: no executor. The node of '{}' (asker) groups table '{}' by [{}] and sends its people's identifiers blinded, per group;",
                c.asker.member,
                c.asker.table,
                c.group_columns.join(", ")
            )?;
            writeln!(
                f,
                "the node of '{}' (responder) sends table '{}''s identifiers blinded{}, matches the twice-blinded sets, and releases per group only counts of at least k",
                c.responder.member,
                c.responder.table,
                match &c.measure {
                    Some(m) => format!(" with each person's '{m}' encrypted"),
                    None => String::new(),
                }
            )?;
            for (who, side) in [("asker", &c.asker), ("responder", &c.responder)] {
                writeln!(
                    f,
                    "  {who} filter applied on its node: {}",
                    side.filter
                        .as_ref()
                        .map(|p| serde_json::to_string(p).unwrap_or_default())
                        .unwrap_or_else(|| "none".into())
                )?;
            }
            return Ok(());
        }
        for (i, pf) in self.fragments.iter().enumerate() {
            match &pf.fragment {
                Fragment::Analysis { table, .. } => {
                    writeln!(
                        f,
                        "fragment {}: node of '{}' runs the whole analysis on table '{}' and applies its own rules;",
                        i + 1,
                        pf.member,
                        table
                    )?;
                    writeln!(f, "  only the released aggregate rows leave the node")?;
                }
                Fragment::Scan(s) => {
                    writeln!(
                        f,
                        "fragment {}: node of '{}' scans table '{}'",
                        i + 1,
                        pf.member,
                        s.table
                    )?;
                    write_scan(f, s)?;
                }
            }
        }
        if let Some(dp) = &self.dp {
            let by = if self.executor.is_some() {
                "the executor"
            } else {
                "the node"
            };
            writeln!(
                f,
                "differential privacy: {by} bounds each person's rows and groups, adds exact discrete Laplace noise and releases only public keys or groups passing partition selection"
            )?;
            return writeln!(
                f,
                "cost: epsilon {}, delta {}, debited from the privacy budget before anything runs",
                dp.cost.epsilon, dp.cost.delta
            );
        }
        match (&self.executor, self.kind) {
            (Some(_), QueryKind::Aggregation { k }) => writeln!(
                f,
                "executor: joins the fragments on pseudonyms, aggregates, and releases only rows with at least {k} distinct identities of every table"
            ),
            (Some(_), QueryKind::List) => writeln!(
                f,
                "executor: joins the fragments on pseudonyms and releases the querier's own list columns of the overlapping rows"
            ),
            (None, QueryKind::Aggregation { k }) => writeln!(
                f,
                "threshold: at least {k} distinct identities per output row, applied by the node"
            ),
            (None, QueryKind::List) => Ok(()),
        }
    }
}

fn write_scan(f: &mut fmt::Formatter<'_>, s: &ScanFragment) -> fmt::Result {
    let cols: Vec<String> = s
        .columns
        .iter()
        .map(|c| match &c.treatment {
            airlock_protocol::Treatment::Raw => format!("{} (raw)", c.name),
            airlock_protocol::Treatment::Pseudonym { contract } => {
                format!("{} (pseudonym, contract '{contract}')", c.name)
            }
        })
        .collect();
    writeln!(f, "  columns leaving the node: {}", cols.join(", "))?;
    match &s.filter {
        Some(p) => writeln!(
            f,
            "  filter applied on the node: {}",
            serde_json::to_string(p).unwrap_or_default()
        ),
        None => writeln!(f, "  filter applied on the node: none"),
    }
}

/// The guard of one collaboration (or of one node's part of it).
pub struct Guard {
    ctx: SessionContext,
    tables: HashMap<String, TableInfo>,
    collaboration: String,
    collab: Collaboration,
    limits: Limits,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("collaboration", &self.collaboration)
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Guard {
    /// A guard over the configured tables for which `schemas` has a schema
    /// (the columns of the configured table as its node exposes them).
    pub fn new(
        collab: &Collaboration,
        schemas: &HashMap<String, SchemaRef>,
    ) -> Result<Self, GuardError> {
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(2);
        let ctx = SessionContext::new_with_config(config);
        let mut tables = check::build_tables(collab);
        tables.retain(|alias, _| schemas.contains_key(alias));
        for (alias, schema) in schemas {
            if !tables.contains_key(alias) {
                return Err(GuardError::Internal(format!(
                    "schema given for '{alias}', which is not a configured table"
                )));
            }
            ctx.register_table(alias.as_str(), Arc::new(EmptyTable::new(schema.clone())))
                .map_err(internal)?;
        }
        Ok(Guard {
            ctx,
            tables,
            collaboration: collab.name().to_string(),
            collab: collab.clone(),
            limits: Limits::default(),
        })
    }

    /// The same guard with other size limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Parses, plans and checks ad hoc `sql` for `querier`, and adds the
    /// threshold.
    pub async fn check(&self, sql: &str, querier: &str) -> Result<CheckedQuery, GuardError> {
        self.check_spec(&QuerySpec::sql(sql), querier).await
    }

    /// Checks what an analyst asks for: ad hoc SQL, or a template run whose
    /// parameters are parsed by type, checked against the template's
    /// declaration and bound as values.
    pub async fn check_spec(
        &self,
        spec: &QuerySpec,
        querier: &str,
    ) -> Result<CheckedQuery, GuardError> {
        let (sql, run, purpose) = templates::resolve(&self.collab, spec)?;
        self.check_run(&sql, run.as_ref(), purpose.as_deref(), querier, true)
            .await
    }

    /// Checks `sql` (a template's text when `run` is given, with `run`'s
    /// values bound) for `querier`. With `approvals`, a template run needs
    /// the approval of every owner of a table it reads (that this guard
    /// knows: a node's guard knows its own tables).
    pub async fn check_run(
        &self,
        sql: &str,
        run: Option<&TemplateRun>,
        purpose: Option<&str>,
        querier: &str,
        approvals: bool,
    ) -> Result<CheckedQuery, GuardError> {
        self.collab.check_purpose(purpose)?;
        let template = match run {
            Some(r) => {
                let t = templates::template_of(&self.collab, r, querier, purpose)?;
                if t.sql != sql {
                    return Err(GuardError::BadInput(
                        "the SQL of a template run is not the template's text".into(),
                    ));
                }
                Some(t)
            }
            None => None,
        };
        let plan = self.plan_sql(sql).await?;
        let plan = templates::bind(plan, template, run)?;
        let plan = rewrite::widen_sums(plan).map_err(internal)?;
        let plan = self.analyze(plan)?;
        let plan = total::make_total(plan).map_err(internal)?;
        let used = templates::functions_used(&plan);
        let mut checked = self.check_plan(sql, plan, querier).await?;
        templates::check_rules(&self.collab, &self.tables, &checked, run, approvals)?;
        templates::check_functions(&self.tables, &checked, &used)?;
        templates::check_list_purpose(&self.collab, &checked, purpose)?;
        checked.template = run.cloned();
        checked.purpose = purpose.map(str::to_string);
        Ok(checked)
    }

    /// Checks a crypto-mode query: every rule as for any query, then the
    /// shapes crypto mode computes; returns the asker's fragment (the
    /// responder's differs only in its role) and, under differential
    /// privacy, what the query costs.
    pub async fn check_crypto(
        &self,
        spec: &QuerySpec,
        querier: &str,
    ) -> Result<(airlock_protocol::CryptoFragment, Option<dp::DpCost>), GuardError> {
        let (sql, run, purpose) = templates::resolve(&self.collab, spec)?;
        self.check_run(&sql, run.as_ref(), purpose.as_deref(), querier, true)
            .await?;
        let template = match &run {
            Some(r) => Some(templates::template_of(
                &self.collab,
                r,
                querier,
                purpose.as_deref(),
            )?),
            None => None,
        };
        let plan = self.plan_sql(&sql).await?;
        let plan = templates::bind(plan, template, run.as_ref())?;
        let checked = check::check_plan(&self.tables, querier, &plan)?;
        let fragment = crypto::shape(
            &self.ctx.state(),
            &self.tables,
            &self.collaboration,
            &checked,
            &plan,
            querier,
            run.as_ref(),
            purpose.as_deref(),
        )?;
        let cost = crypto::cost(&self.collab, &fragment).map_err(GuardError::Refused)?;
        Ok((fragment, cost))
    }

    /// Static verification of a template before an owner approves it: the
    /// template is checked against every rule of every table it reads, for
    /// every member who may run it and every combination of its allowed
    /// parameter values (each listed value, each range's two ends). Returns
    /// how many checks passed, or every reason it could violate a rule.
    pub async fn verify_template(&self, template: &Template) -> Result<usize, Vec<String>> {
        templates::verify(self, template).await
    }

    /// Parses and plans `sql` on a thread of its own with a large stack
    /// (parsing and planning recurse once per level of an expression), then
    /// refuses it there if it is over a limit: a hostile query is dropped
    /// where it was built, and no deep plan reaches the caller's stack.
    async fn plan_sql(&self, sql: &str) -> Result<LogicalPlan, GuardError> {
        self.limits.check_sql(sql)?;
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("airlock-plan".into())
                .stack_size(PLANNING_STACK)
                .spawn_scoped(scope, || {
                    futures::executor::block_on(self.plan_on_this_thread(sql))
                })
                .map_err(|e| GuardError::Internal(format!("cannot start the planner: {e}")))?
                .join()
                .map_err(|_| GuardError::Internal("the planner failed".into()))?
        })
    }

    async fn plan_on_this_thread(&self, sql: &str) -> Result<LogicalPlan, GuardError> {
        let mut statements =
            DFParser::parse_sql(sql).map_err(|e| GuardError::BadInput(e.to_string()))?;
        if statements.len() != 1 {
            return Err(GuardError::BadInput(format!(
                "expected exactly one statement, found {}",
                statements.len()
            )));
        }
        let Some(statement) = statements.pop_front() else {
            return Err(GuardError::BadInput("empty query".into()));
        };
        check_statement(&statement, sql)?;
        let (references, _ctes) = resolve_table_references(&statement, true)
            .map_err(|e| GuardError::BadInput(e.to_string()))?;
        for r in references {
            let schema = r.schema().map(str::to_ascii_lowercase);
            if schema.as_deref() == Some("information_schema")
                || r.table().eq_ignore_ascii_case("information_schema")
            {
                return Err(Refusal::new(
                    Control::Metadata,
                    "information_schema and other metadata are not available",
                )
                .into());
            }
            if r.schema().is_some() || !self.tables.contains_key(r.table()) {
                return Err(Refusal::new(
                    Control::UnknownTable,
                    "not a configured table of this collaboration",
                )
                .table(r.to_string(), None)
                .into());
            }
        }
        let state = self.ctx.state();
        // A function the engine does not know is as refused as one it knows
        // but the allowlist does not name: found by name before planning,
        // not by reading the planner's error text.
        if calls_unknown_function(&statement, &state) {
            return Err(Refusal::new(
                Control::UnknownFunction,
                "a function in the query is not on the allowlist",
            )
            .into());
        }
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| GuardError::BadInput(e.strip_backtrace().to_string()))?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|_| Refusal::new(Control::Statement, "only SELECT queries are allowed"))?;
        self.limits.check_plan(&plan)?;
        Ok(plan)
    }

    /// The plan as it will run: the analyzer's type coercion inserts the
    /// casts that comparing or combining values of different types needs,
    /// and each of them is checked like any other expression.
    fn analyze(&self, plan: LogicalPlan) -> Result<LogicalPlan, GuardError> {
        let state = self.ctx.state();
        Analyzer::new()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(|e| GuardError::BadInput(e.strip_backtrace()))
    }

    async fn check_plan(
        &self,
        sql: &str,
        plan: LogicalPlan,
        querier: &str,
    ) -> Result<CheckedQuery, GuardError> {
        if total::failing_constant(&plan) {
            return Err(GuardError::BadInput(
                "a constant expression in the query cannot be evaluated (a cast of a literal, say)"
                    .into(),
            ));
        }
        let checked = check::check_plan(&self.tables, querier, &plan)?;
        total::check_plan(&plan)?;
        let mut dp = None;
        let mut upper = None;
        let plan = match (checked.kind, &checked.dp) {
            (QueryKind::Aggregation { k }, Some(shape)) => {
                let (lower, release) = dp::rewrite(&plan, shape, &checked, &self.tables, k)?;
                dp = Some(release);
                lower
            }
            (QueryKind::Aggregation { k }, None) => {
                let (lower, steps) =
                    rewrite::add_threshold(plan, k, &checked, &self.tables).map_err(internal)?;
                upper = Some(steps);
                lower
            }
            (QueryKind::List, _) => plan,
        };
        // A plan the engine cannot turn into a physical plan fails for
        // every content of the tables: refuse it here, before anything
        // runs, rather than fail after (the tables are schema-only, so no
        // message can carry a value).
        let state = self.ctx.state();
        let plans = std::iter::once(&plan).chain(upper.as_ref().map(Upper::plan));
        for p in plans {
            state.create_physical_plan(p).await.map_err(|e| {
                GuardError::BadInput(format!(
                    "the engine cannot run this query as written ({})",
                    e.strip_backtrace().lines().next().unwrap_or_default()
                ))
            })?;
        }
        Ok(CheckedQuery {
            sql: sql.to_string(),
            querier: querier.to_string(),
            kind: checked.kind,
            scans: checked.scans,
            plan,
            upper,
            dp,
            template: None,
            purpose: None,
        })
    }

    /// Splits a checked query into fragments and the executor's plan. A query
    /// that reads one table runs entirely on its owner's node.
    pub fn split(&self, q: &CheckedQuery) -> Result<QueryPlan, GuardError> {
        if let [scan] = q.scans.as_slice() {
            return Ok(QueryPlan {
                fragments: vec![PlannedFragment {
                    member: scan.owner.clone(),
                    fragment: Fragment::Analysis {
                        collaboration: self.collaboration.clone(),
                        query: String::new(),
                        querier: q.querier.clone(),
                        table: scan.table.clone(),
                        sql: q.sql.clone(),
                        template: q.template.clone(),
                        purpose: q.purpose.clone(),
                    },
                }],
                executor: None,
                kind: q.kind,
                upper: None,
                dp: q.dp.clone(),
                crypto: None,
                per_person: None,
            });
        }
        let state = self.ctx.state();
        let (splits, executor) = split::split(
            &state,
            &q.plan,
            &self.tables,
            &self.collaboration,
            &q.querier,
        )
        .map_err(internal)?;
        if let Some((s, (column, t))) = splits
            .iter()
            .find_map(|s| s.unbounded.clone().map(|u| (s, u)))
        {
            return Err(GuardError::Refused(
                Refusal::new(
                    Control::Limit,
                    format!("the executor takes only columns whose values it can bound (numbers, dates, texts and binaries, dictionaries with keys of 32 or 64 bits), and this one is {t}: one member's value of it could fill the executor's memory, or fail a query, exactly when its row joins"),
                )
                .table(s.fragment.table.clone(), None)
                .column(column),
            ));
        }
        let per_person = match &q.dp {
            None => None,
            Some(dp) => Some(PerPerson {
                rows: dp.rows_per_person,
                identity_columns: splits
                    .iter()
                    .map(|s| s.identity)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        internal("a fragment of a DP query lacks its table's identity column")
                    })?,
            }),
        };
        let declared = q.dp.as_ref().map(|dp| airlock_protocol::ScanDp {
            tables: q.scans.iter().map(|s| s.table.clone()).collect(),
            partition_selection: dp.partition_selection(),
        });
        // Each node prices its fragment from what it declares
        // (`dp::scan_cost`): the same price as the hub's, or the query is
        // refused here rather than by a node.
        if let (Some(dp), Some(declared)) = (&q.dp, &declared) {
            for s in &splits {
                let cost = dp::scan_cost(&self.collab, &s.fragment.table, declared)?;
                if cost != dp.cost {
                    return Err(internal("a node would price this query differently"));
                }
            }
        }
        Ok(QueryPlan {
            per_person,
            fragments: splits
                .into_iter()
                .map(|s| PlannedFragment {
                    member: s.owner,
                    fragment: Fragment::Scan(ScanFragment {
                        template: q.template.clone(),
                        purpose: q.purpose.clone(),
                        dp: declared.clone(),
                        ..s.fragment
                    }),
                })
                .collect(),
            executor: Some(executor),
            kind: q.kind,
            upper: q.upper.clone(),
            dp: q.dp.clone(),
            crypto: None,
        })
    }
}

/// Only plain queries pass; every other statement is refused by name.
/// Whether the query calls a function by a name the session registers as
/// no scalar, aggregate or window function.
fn calls_unknown_function(
    statement: &DFStatement,
    state: &datafusion::execution::SessionState,
) -> bool {
    use datafusion::sql::sqlparser::ast::{visit_expressions, Expr as SqlExpr, ObjectNamePart};
    let DFStatement::Statement(s) = statement else {
        return false;
    };
    let known = |name: &str| {
        state.scalar_functions().contains_key(name)
            || state.aggregate_functions().contains_key(name)
            || state.window_functions().contains_key(name)
    };
    let found = visit_expressions(s.as_ref(), |e| {
        if let SqlExpr::Function(f) = e {
            let name = match f.name.0.last() {
                Some(ObjectNamePart::Identifier(i)) if i.quote_style.is_some() => i.value.clone(),
                Some(ObjectNamePart::Identifier(i)) => i.value.to_lowercase(),
                _ => return std::ops::ControlFlow::Break(()),
            };
            if f.name.0.len() != 1 || !known(&name) {
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    found.is_break()
}

fn check_statement(statement: &DFStatement, sql: &str) -> Result<(), GuardError> {
    let keyword = || {
        sql.split_whitespace()
            .next()
            .unwrap_or("")
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .take(20)
            .collect::<String>()
            .to_uppercase()
    };
    let refuse = || {
        GuardError::Refused(Refusal::new(
            Control::Statement,
            format!(
                "{} statements are not allowed; only SELECT queries",
                keyword()
            ),
        ))
    };
    match statement {
        DFStatement::Statement(s) => match s.as_ref() {
            Statement::Query(q) => {
                if has_set_operation(q) {
                    return Err(Refusal::new(
                        Control::SetOperation,
                        "UNION, INTERSECT and EXCEPT are not allowed: each branch would be a separate release",
                    )
                    .into());
                }
                Ok(())
            }
            _ => Err(refuse()),
        },
        _ => Err(refuse()),
    }
}

fn has_set_operation(q: &datafusion::sql::sqlparser::ast::Query) -> bool {
    let in_ctes = q
        .with
        .as_ref()
        .is_some_and(|w| w.cte_tables.iter().any(|c| has_set_operation(&c.query)));
    in_ctes || set_expr_has_set_operation(&q.body)
}

fn set_expr_has_set_operation(body: &SetExpr) -> bool {
    match body {
        SetExpr::SetOperation { .. } => true,
        SetExpr::Query(q) => has_set_operation(q),
        SetExpr::Select(s) => s.from.iter().any(|t| {
            std::iter::once(&t.relation)
                .chain(t.joins.iter().map(|j| &j.relation))
                .any(|r| matches!(r, TableFactor::Derived { subquery, .. } if has_set_operation(subquery)))
        }),
        _ => false,
    }
}
