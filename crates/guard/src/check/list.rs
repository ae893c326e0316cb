//! The list rule: the querier's own list columns of rows that join
//! another member's table, nothing else.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Checker<'_> {
    pub(super) fn check_list(&mut self, plan: &LogicalPlan) -> R<QueryKind> {
        let out = self.lineage(plan)?;
        if self.scans.is_empty() {
            return Err(Refusal::new(
                Control::UnsupportedPlan,
                "a query must read at least one configured table",
            ));
        }
        for s in &self.scans {
            let info = &self.tables[&s.table];
            if info.table.rule.kind() != RuleKind::List {
                return Err(Refusal::new(
                    Control::AggregationRequired,
                    "this table may only be read through aggregates",
                )
                .table(&s.table, Some(info.table.rule.kind())));
            }
        }
        for class in &out {
            match class {
                Class::Identity { scan, column } | Class::Join { scan, column, .. } => {
                    return Err(self.refuse_at(
                        Control::IdentityOutput,
                        *scan,
                        column,
                        "identity and join columns can never be output",
                    ))
                }
                Class::Measure { scan, column } => {
                    return Err(self.refuse_at(
                        Control::ListRule,
                        *scan,
                        column,
                        "measures cannot be listed",
                    ))
                }
                Class::Dimension { sources } => {
                    for (scan, column) in sources {
                        let s = &self.scans[*scan];
                        if s.owner != self.querier {
                            return Err(self.refuse_at(
                                Control::ListRule,
                                *scan,
                                column,
                                "only the querier's own table's list columns may be output",
                            ));
                        }
                        let listed = matches!(&self.info(*scan).table.rule,
                            airlock_policy::AnalysisRule::List { list_columns } if list_columns.contains(column));
                        if !listed {
                            return Err(self.refuse_at(
                                Control::ListRule,
                                *scan,
                                column,
                                "not a list column of this table",
                            ));
                        }
                    }
                }
            }
        }
        let joined = (0..self.scans.len())
            .any(|i| self.scans[i].owner == self.querier && self.joined_with_other_owner(i));
        if !joined {
            return Err(Refusal::new(
                Control::ListRule,
                "a list query must inner-join the querier's own table with another member's table on join columns",
            ));
        }
        Ok(QueryKind::List)
    }
}
