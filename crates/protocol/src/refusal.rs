//! The typed refusal: what Airlock answers when a query or a fragment breaks a rule.
//!
//! A refusal names the control that was broken, the analysis rule, the table and
//! the column. Its reason is written by Airlock from names only: it never holds a
//! value read from data, so it may cross any member boundary. It lives here,
//! with its one codec for a transport's status message ([`status_message`],
//! [`from_status_message`]), because it crosses every boundary: the guard
//! and the node make it, the hub relays it, clients read it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which analysis rule a configured table carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Aggregates only, with a minimum of distinct identities per output row.
    Aggregation,
    /// Row-level overlap lists of permitted columns.
    List,
    /// The aggregation rule's limits, and only approved templates and/or
    /// only named analysts.
    Custom,
}

impl RuleKind {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Aggregation => "aggregation",
            RuleKind::List => "list",
            RuleKind::Custom => "custom",
        }
    }
}

/// The control a refused query or fragment broke. One per class of attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Control {
    /// Row-level output from a table whose rule requires aggregation.
    AggregationRequired,
    /// An identity or join column would appear in the output.
    IdentityOutput,
    /// An identity or join column used inside a function or expression.
    IdentityInExpression,
    /// A predicate on an identity, join or measure column.
    RestrictedFilter,
    /// A column used in a role the configured table does not give it.
    ColumnRole,
    /// An aggregate function the rule does not allow for this column.
    DisallowedAggregate,
    /// An expression inside an aggregate, or an aggregate option (FILTER, ORDER BY).
    ExpressionInAggregate,
    /// Window functions are never allowed.
    WindowFunction,
    /// Aggregation over an aggregate, or ordering/limiting rows before aggregation.
    NestedAggregation,
    /// UNION / INTERSECT / EXCEPT.
    SetOperation,
    /// A subquery inside an expression (EXISTS, IN (SELECT ...), scalar subquery).
    Subquery,
    /// A join that is not an inner equality join on join columns of one contract.
    Join,
    /// The rule requires a join with another member's table and the query has none.
    JoinRequired,
    /// An expression that could fail on one value (error oracle).
    ErrorOracle,
    /// DDL, DML, EXPLAIN, SHOW, COPY, SET and every statement that is not a query.
    Statement,
    /// information_schema, system tables, table functions.
    Metadata,
    /// A function that is not on the allowlist.
    UnknownFunction,
    /// A table that is not configured in this collaboration.
    UnknownTable,
    /// A name starting with the reserved `__airlock` prefix.
    ReservedName,
    /// The list rule: only the querier's own list columns, through an inner join.
    ListRule,
    /// Literal rows (VALUES) or other plan nodes the guard does not accept.
    UnsupportedPlan,
    /// The member lacks the ability the request needs.
    Ability,
    /// A node refused a fragment on its own rules.
    FragmentNotPermitted,
    /// A fragment was planned under a policy version other than the one the
    /// node holds.
    PolicyVersion,
    /// A query that differential privacy cannot serve as written.
    DifferentialPrivacy,
    /// The privacy budget does not cover the query's cost.
    PrivacyBudget,
    /// A table under the custom rule admits only approved templates, or
    /// only named analysts; or a template restricts who may run it.
    CustomRule,
    /// A template run that an owner of a table it reads has not approved
    /// (at that exact content hash), or an approval whose verification failed.
    TemplateApproval,
    /// A query without the purpose its output needs, or with one the
    /// collaboration does not declare.
    Purpose,
    /// A query crypto mode cannot compute (it supports overlap counts and
    /// sums of the other member's measure, by the asker's dimensions).
    CryptoMode,
    /// A query or request beyond a size, depth, time or memory limit.
    Limit,
}

impl Control {
    /// The kebab-case name used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Control::AggregationRequired => "aggregation-required",
            Control::IdentityOutput => "identity-output",
            Control::IdentityInExpression => "identity-in-expression",
            Control::RestrictedFilter => "restricted-filter",
            Control::ColumnRole => "column-role",
            Control::DisallowedAggregate => "disallowed-aggregate",
            Control::ExpressionInAggregate => "expression-in-aggregate",
            Control::WindowFunction => "window-function",
            Control::NestedAggregation => "nested-aggregation",
            Control::SetOperation => "set-operation",
            Control::Subquery => "subquery",
            Control::Join => "join",
            Control::JoinRequired => "join-required",
            Control::ErrorOracle => "error-oracle",
            Control::Statement => "statement",
            Control::Metadata => "metadata",
            Control::UnknownFunction => "unknown-function",
            Control::UnknownTable => "unknown-table",
            Control::ReservedName => "reserved-name",
            Control::ListRule => "list-rule",
            Control::UnsupportedPlan => "unsupported-plan",
            Control::Ability => "ability",
            Control::FragmentNotPermitted => "fragment-not-permitted",
            Control::PolicyVersion => "policy-version",
            Control::DifferentialPrivacy => "differential-privacy",
            Control::PrivacyBudget => "privacy-budget",
            Control::CustomRule => "custom-rule",
            Control::TemplateApproval => "template-approval",
            Control::Purpose => "purpose",
            Control::CryptoMode => "crypto-mode",
            Control::Limit => "limit",
        }
    }
}

/// A refused query or fragment. Holds names, never data values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The control that was broken.
    pub control: Control,
    /// The analysis rule of the table concerned, when one table is concerned.
    pub rule: Option<RuleKind>,
    /// The configured table (alias), when one is concerned.
    pub table: Option<String>,
    /// The column, when one is concerned.
    pub column: Option<String>,
    /// Why, in words written by Airlock from names only.
    pub reason: String,
}

impl Refusal {
    /// A refusal with no table or column.
    pub fn new(control: Control, reason: impl Into<String>) -> Self {
        Refusal {
            control,
            rule: None,
            table: None,
            column: None,
            reason: reason.into(),
        }
    }

    /// Names the table and its analysis rule.
    pub fn table(mut self, table: impl Into<String>, rule: Option<RuleKind>) -> Self {
        self.table = Some(table.into());
        self.rule = rule;
        self
    }

    /// Names the column.
    pub fn column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused [{}]", self.control.name())?;
        if let Some(rule) = self.rule {
            write!(f, " by the {} rule", rule.name())?;
        }
        if let Some(table) = &self.table {
            write!(f, " of table '{table}'")?;
        }
        if let Some(column) = &self.column {
            write!(f, ", column '{column}'")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for Refusal {}

/// Prefix of a transport status message that carries a typed refusal.
pub const REFUSAL_PREFIX: &str = "airlock-refusal:";

/// Encodes a refusal as a status message (the prefix, then its JSON).
pub fn status_message(r: &Refusal) -> String {
    format!(
        "{REFUSAL_PREFIX}{}",
        serde_json::to_string(r).unwrap_or_default()
    )
}

/// Decodes a refusal from a status message; `None` if it carries none.
pub fn from_status_message(message: &str) -> Option<Refusal> {
    serde_json::from_str(message.strip_prefix(REFUSAL_PREFIX)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_survives_its_status_message_and_other_messages_carry_none() {
        let r = Refusal::new(Control::RestrictedFilter, "a filter on a measure")
            .table("purchases", Some(RuleKind::Aggregation))
            .column("amount");
        let m = status_message(&r);
        assert!(m.starts_with(REFUSAL_PREFIX));
        assert_eq!(from_status_message(&m), Some(r));
        assert_eq!(from_status_message("the node is down"), None);
        assert_eq!(from_status_message("airlock-refusal:{not json"), None);
    }
}
