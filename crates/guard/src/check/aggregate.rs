//! The aggregation rule: one aggregate, its groups and aggregate
//! functions by column role, what differential privacy can serve, and the
//! expressions over released aggregates above it.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Checker<'_> {
    pub(super) fn check_aggregation(&mut self, plan: &LogicalPlan) -> R<QueryKind> {
        let mut node = plan;
        let mut shape = AggShape::default();
        let mut top_projection: Option<&datafusion::logical_expr::Projection> = None;
        let agg = loop {
            match node {
                LogicalPlan::Projection(p) => {
                    p.expr.iter().try_for_each(check_released_expr)?;
                    if top_projection.is_none() {
                        top_projection = Some(p);
                    } else {
                        shape.above.push("a nested projection".into());
                    }
                    node = &p.input;
                }
                LogicalPlan::Filter(f) => {
                    check_released_expr(&f.predicate)?;
                    shape.above.push("HAVING".into());
                    node = &f.input;
                }
                LogicalPlan::Sort(s) => {
                    s.expr.iter().try_for_each(|e| check_released_expr(&e.expr))?;
                    shape.above.push("ORDER BY".into());
                    node = &s.input;
                }
                LogicalPlan::Limit(l) => {
                    for e in l.skip.iter().chain(l.fetch.iter()) {
                        check_released_expr(e)?;
                    }
                    shape.above.push("LIMIT".into());
                    node = &l.input;
                }
                LogicalPlan::SubqueryAlias(a) => node = &a.input,
                LogicalPlan::Distinct(Distinct::All(input)) => {
                    shape.above.push("DISTINCT".into());
                    node = input;
                }
                LogicalPlan::Aggregate(a) => break a,
                LogicalPlan::Distinct(Distinct::On(_)) => {
                    return Err(Refusal::new(
                        Control::UnsupportedPlan,
                        "DISTINCT ON is not allowed: it selects individual rows",
                    ))
                }
                _ => {
                    return Err(Refusal::new(
                        Control::NestedAggregation,
                        "an aggregate must be the last step over the joined rows; joining or reading an aggregated subquery is not allowed",
                    ))
                }
            }
        };
        let input = self.lineage(&agg.input)?;
        let schema = agg.input.schema();
        for g in &agg.group_expr {
            self.check_group(g, &input, schema)?;
        }
        let plain = |e: &Expr| -> Option<(usize, String, bool)> {
            let Expr::Column(c) = peel(e) else {
                return None;
            };
            let idx = schema.index_of_column(c).ok()?;
            match &input[idx] {
                Class::Dimension { sources } if sources.len() == 1 => {
                    Some((sources[0].0, sources[0].1.clone(), false))
                }
                Class::Measure { scan, column } => Some((*scan, column.clone(), false)),
                Class::Identity { scan, column } => Some((*scan, column.clone(), true)),
                _ => None,
            }
        };
        shape.groups = agg
            .group_expr
            .iter()
            .map(|g| plain(g).filter(|(_, _, id)| !id).map(|(s, c, _)| (s, c)))
            .collect();
        shape.aggregates = agg
            .aggr_expr
            .iter()
            .map(|a| {
                let inner = match a {
                    Expr::Alias(x) => x.expr.as_ref(),
                    other => other,
                };
                match inner {
                    Expr::AggregateFunction(af) => (
                        af.func.name().to_ascii_lowercase(),
                        af.params.distinct,
                        af.params.args.first().and_then(plain),
                    ),
                    _ => (String::new(), false, None),
                }
            })
            .collect();
        let agg_schema = agg.schema.clone();
        shape.outputs = match top_projection {
            Some(p) => p
                .expr
                .iter()
                .zip(p.schema.fields())
                .map(|(e, f)| {
                    let inner = match e {
                        Expr::Alias(x) => x.expr.as_ref(),
                        other => other,
                    };
                    let idx = match inner {
                        Expr::Column(c) => agg_schema.index_of_column(c).ok(),
                        _ => None,
                    };
                    (f.name().clone(), idx)
                })
                .collect(),
            None => agg_schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name().clone(), Some(i)))
                .collect(),
        };
        for (i, a) in agg.aggr_expr.iter().enumerate() {
            self.check_aggregate(a, &input, schema)?;
            if let Some(scan) = distinct_identity_count(a, &input, schema) {
                self.identity_counts.push((scan, i));
            }
        }
        if self.scans.is_empty() {
            return Err(Refusal::new(
                Control::UnsupportedPlan,
                "a query must read at least one configured table",
            ));
        }
        for (i, s) in self.scans.iter().enumerate() {
            let info = &self.tables[&s.table];
            match &info.table.rule {
                rule @ (airlock_policy::AnalysisRule::Aggregation { .. }
                | airlock_policy::AnalysisRule::Custom { .. }) => {
                    if rule.join_required() && !self.joined_with_other_owner(i) {
                        return Err(Refusal::new(
                            Control::JoinRequired,
                            "this table may only be read joined with another member's table",
                        )
                        .table(&s.table, Some(rule.kind())));
                    }
                }
                airlock_policy::AnalysisRule::List { .. } => {
                    return Err(Refusal::new(
                        Control::ListRule,
                        "aggregates are not allowed on a table under the list rule",
                    )
                    .table(&s.table, Some(RuleKind::List)))
                }
            }
        }
        let k = airlock_policy::strictest_k(self.scanned_tables());
        self.dp = self.dp_shape(agg, &input, schema)?;
        shape.joins = self.joins.clone();
        self.shape = Some(shape);
        Ok(QueryKind::Aggregation { k })
    }

    /// Under differential privacy (every table read has a DP rule, or none
    /// does): the aggregates with their clamping bounds, the group keys'
    /// public sets, and the query's parameters.
    pub(super) fn dp_shape(
        &self,
        agg: &datafusion::logical_expr::Aggregate,
        input: &[Class],
        schema: &DFSchema,
    ) -> R<Option<DpShape>> {
        let Some(strictest) = airlock_policy::StrictestDp::over(self.scanned_tables())? else {
            return Ok(None);
        };
        let airlock_policy::StrictestDp {
            epsilon,
            delta,
            max_rows,
            max_groups,
        } = strictest;
        let mut aggs = Vec::new();
        for a in &agg.aggr_expr {
            let inner = match a {
                Expr::Alias(x) => x.expr.as_ref(),
                other => other,
            };
            let Expr::AggregateFunction(af) = inner else {
                return Err(internal("unexpected aggregate expression"));
            };
            let name = af.func.name().to_ascii_lowercase();
            let arg = af.params.args.first().map(|a| peel(a).clone());
            let measure = |arg: &Option<Expr>| -> R<(Expr, i64, i64)> {
                let Some(Expr::Column(c)) = arg else {
                    return Err(internal("an aggregate without a column"));
                };
                let idx = schema.index_of_column(c).map_err(internal)?;
                let Class::Measure { scan, column } = &input[idx] else {
                    return Err(internal("a sum over a column that is not a measure"));
                };
                let rule = self.info(*scan).table.dp();
                match rule.and_then(|r| r.bounds.get(column)) {
                    Some([lo, hi]) => Ok((Expr::Column(c.clone()), *lo, *hi)),
                    None => Err(self.refuse_at(
                        Control::DifferentialPrivacy,
                        *scan,
                        column,
                        "under differential privacy a summed or averaged measure needs clamping bounds in the rule",
                    )),
                }
            };
            aggs.push(match (name.as_str(), af.params.distinct) {
                ("count", true) => match distinct_identity_count(a, input, schema) {
                    Some(scan) => DpAgg::Distinct { scan },
                    None => {
                        return Err(Refusal::new(
                            Control::DifferentialPrivacy,
                            "under differential privacy COUNT(DISTINCT ...) is allowed only on the identity column",
                        ))
                    }
                },
                ("count", false) => DpAgg::Count {
                    arg: arg.filter(|e| matches!(e, Expr::Column(_))),
                },
                ("sum", false) => {
                    let (arg, lo, hi) = measure(&arg)?;
                    DpAgg::Sum { arg, lo, hi }
                }
                ("avg" | "mean", false) => {
                    let (arg, lo, hi) = measure(&arg)?;
                    DpAgg::Avg { arg, lo, hi }
                }
                _ => {
                    return Err(Refusal::new(
                        Control::DifferentialPrivacy,
                        format!("{} is not supported under differential privacy", name.to_uppercase()),
                    ))
                }
            });
        }
        // Public keys: every group expression is a dimension whose table's
        // rule lists its keys.
        let mut public = Some(Vec::new());
        for g in &agg.group_expr {
            let keys = match g {
                Expr::Column(c) => schema
                    .index_of_column(c)
                    .ok()
                    .and_then(|i| match &input[i] {
                        Class::Dimension { sources } if sources.len() == 1 => {
                            let (scan, column) = &sources[0];
                            self.info(*scan)
                                .table
                                .dp()
                                .and_then(|r| r.public_keys.get(column))
                                .cloned()
                        }
                        _ => None,
                    }),
                _ => None,
            };
            match (keys, public.as_mut()) {
                (Some(k), Some(p)) => p.push(k),
                _ => public = None,
            }
        }
        if public.is_none() && delta <= 0.0 {
            return Err(Refusal::new(
                Control::DifferentialPrivacy,
                "under differential privacy, group keys must be public (listed in the rule's public_keys) unless every table read allows partition selection with a delta above 0",
            ));
        }
        // One person's rows are bounded per identity. Joined on another
        // column (a household, say), one person's row can link to many
        // people's rows of the other table, and no per-identity bound holds
        // for the joined rows: refused (ATTACKS: DP joins off the identity).
        let mut roots = identity_groups(self.scans.len(), &self.identity_joins);
        roots.sort_unstable();
        roots.dedup();
        if roots.len() > 1 {
            return Err(Refusal::new(
                Control::DifferentialPrivacy,
                "under differential privacy every table must be joined on its identity column (with a join on another column one person's rows can reach many people, and their contribution has no bound)",
            ));
        }
        Ok(Some(DpShape {
            aggs,
            public_keys: public,
            epsilon,
            delta,
            max_rows,
            max_groups,
        }))
    }

    /// Whether `scan` is inner-joined, directly or through other scans
    /// (`a1 JOIN a2 JOIN p`), with a scan of another member's table.
    pub(super) fn joined_with_other_owner(&self, scan: usize) -> bool {
        let component = identity_groups(self.scans.len(), &self.joins);
        (0..self.scans.len()).any(|other| {
            component[other] == component[scan] && self.scans[other].owner != self.scans[scan].owner
        })
    }

    pub(super) fn check_group(&self, g: &Expr, input: &[Class], schema: &DFSchema) -> R<()> {
        if let Expr::GroupingSet(_) = g {
            return Err(Refusal::new(
                Control::UnsupportedPlan,
                "GROUPING SETS, CUBE and ROLLUP are not allowed",
            ));
        }
        match self.classify(g, input, schema, Use::Group)? {
            Class::Identity { scan, column } | Class::Join { scan, column, .. } => Err(self
                .refuse_at(
                    Control::IdentityOutput,
                    scan,
                    &column,
                    "identity and join columns can never be grouped by or output",
                )),
            Class::Measure { scan, column } => Err(self.refuse_at(
                Control::ColumnRole,
                scan,
                &column,
                "a measure cannot be used as a dimension; aggregate it with an allowed function",
            )),
            Class::Dimension { .. } => Ok(()),
        }
    }

    /// The first configured column an expression reads, to name it in a refusal.
    pub(super) fn locate(
        &self,
        e: &Expr,
        input: &[Class],
        schema: &DFSchema,
    ) -> Option<(usize, String)> {
        // In tree order (not `column_refs`, a hash set) so messages are stable.
        let mut columns = Vec::new();
        let _ = e.apply(|x| {
            if let Expr::Column(c) = x {
                columns.push(c.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        columns.iter().find_map(|c| {
            let idx = schema.index_of_column(c).ok()?;
            match &input[idx] {
                Class::Identity { scan, column }
                | Class::Join { scan, column, .. }
                | Class::Measure { scan, column } => Some((*scan, column.clone())),
                Class::Dimension { sources } => sources.first().cloned(),
            }
        })
    }

    /// Names the table and column an aggregate reads in a refusal.
    pub(super) fn name_subject(
        &self,
        r: Refusal,
        e: &Expr,
        input: &[Class],
        schema: &DFSchema,
    ) -> Refusal {
        match self.locate(e, input, schema) {
            Some((scan, column)) => {
                let rule = self.info(scan).table.rule.kind();
                r.table(&self.scans[scan].table, Some(rule)).column(column)
            }
            None => r,
        }
    }

    pub(super) fn check_aggregate(&self, e: &Expr, input: &[Class], schema: &DFSchema) -> R<()> {
        self.check_aggregate_inner(e, input, schema).map_err(|r| {
            if r.table.is_some() {
                r
            } else {
                self.name_subject(r, e, input, schema)
            }
        })
    }

    pub(super) fn check_aggregate_inner(
        &self,
        e: &Expr,
        input: &[Class],
        schema: &DFSchema,
    ) -> R<()> {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(af) = inner else {
            return Err(internal("unexpected aggregate expression"));
        };
        let name = af.func.name().to_ascii_lowercase();
        let p = &af.params;
        if p.filter.is_some() || !p.order_by.is_empty() {
            return Err(Refusal::new(
                Control::ExpressionInAggregate,
                "FILTER and ORDER BY inside an aggregate are not allowed",
            ));
        }
        let fun = match (name.as_str(), p.distinct) {
            ("count", false) => AggFunction::Count,
            ("count", true) => AggFunction::CountDistinct,
            ("sum", false) => AggFunction::Sum,
            ("avg" | "mean", false) => AggFunction::Avg,
            ("sum" | "avg" | "mean", true) => {
                return Err(Refusal::new(
                    Control::DisallowedAggregate,
                    format!("{} DISTINCT is not allowed", name.to_uppercase()),
                ))
            }
            _ => {
                return Err(Refusal::new(
                    Control::DisallowedAggregate,
                    format!(
                        "{} is not an allowed aggregate; allowed are COUNT, COUNT DISTINCT, SUM and AVG as each rule lists them",
                        name.to_uppercase()
                    ),
                ))
            }
        };
        let [arg] = p.args.as_slice() else {
            return Err(Refusal::new(
                Control::ExpressionInAggregate,
                "aggregates take exactly one column",
            ));
        };
        match peel(arg) {
            Expr::Literal(..) if fun == AggFunction::Count => Ok(()),
            Expr::Column(c) => {
                let idx = schema.index_of_column(c).map_err(internal)?;
                match &input[idx] {
                    Class::Identity { scan, column } => {
                        if matches!(fun, AggFunction::Count | AggFunction::CountDistinct) {
                            Ok(())
                        } else {
                            Err(self.refuse_at(
                                Control::DisallowedAggregate,
                                *scan,
                                column,
                                "the identity column may only be counted",
                            ))
                        }
                    }
                    Class::Join { scan, column, .. } => Err(self.refuse_at(
                        Control::DisallowedAggregate,
                        *scan,
                        column,
                        "join columns cannot be aggregated",
                    )),
                    Class::Dimension { sources } => match sources.first() {
                        Some((scan, column)) => Err(self.refuse_at(
                            Control::DisallowedAggregate,
                            *scan,
                            column,
                            "aggregates apply to measures; count people with COUNT(DISTINCT identity)",
                        )),
                        None => Err(Refusal::new(
                            Control::ExpressionInAggregate,
                            "only a measure column may be aggregated",
                        )),
                    },
                    Class::Measure { scan, column } => {
                        let allowed = match self.info(*scan).table.role(column) {
                            Some(ColumnRole::Measure(f)) => f.contains(&fun),
                            _ => false,
                        };
                        if allowed {
                            Ok(())
                        } else {
                            Err(self.refuse_at(
                                Control::DisallowedAggregate,
                                *scan,
                                column,
                                &format!("{} is not allowed on this measure", fun.name()),
                            ))
                        }
                    }
                }
            }
            _ => Err(Refusal::new(
                Control::ExpressionInAggregate,
                "expressions inside aggregates are not allowed; aggregate a plain measure column",
            )),
        }
    }
}

/// The scan whose identity `e` counts, if `e` is `COUNT(DISTINCT identity)`.
pub(super) fn distinct_identity_count(
    e: &Expr,
    input: &[Class],
    schema: &DFSchema,
) -> Option<usize> {
    let inner = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(af) = inner else {
        return None;
    };
    let p = &af.params;
    if !af.func.name().eq_ignore_ascii_case("count") || !p.distinct || p.filter.is_some() {
        return None;
    }
    let [arg] = p.args.as_slice() else {
        return None;
    };
    let Expr::Column(c) = peel(arg) else {
        return None;
    };
    match input.get(schema.index_of_column(c).ok()?)? {
        Class::Identity { scan, .. } => Some(*scan),
        _ => None,
    }
}

/// Checks an expression over released aggregates (above the aggregate).
pub(super) fn check_released_expr(e: &Expr) -> R<()> {
    first_refusal(e, |x| match x {
        Expr::ScalarFunction(f) if !scalar_allowed(f.func.name()) => Some(Refusal::new(
            Control::UnknownFunction,
            format!("function {} is not on the allowlist", f.func.name()),
        )),
        Expr::Column(_)
        | Expr::Literal(..)
        | Expr::Alias(_)
        | Expr::BinaryExpr(_)
        | Expr::Not(_)
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNotFalse(_)
        | Expr::IsNotUnknown(_)
        | Expr::Negative(_)
        | Expr::Between(_)
        | Expr::Case(_)
        | Expr::InList(_)
        | Expr::Like(_)
        | Expr::Cast(_)
        | Expr::TryCast(_)
        | Expr::ScalarFunction(_) => None,
        Expr::AggregateFunction(_) => Some(Refusal::new(
            Control::NestedAggregation,
            "aggregates are allowed only in the aggregate step",
        )),
        other => Some(Refusal::new(
            Control::UnsupportedPlan,
            format!("expression {} is not allowed", other.variant_name()),
        )),
    })
}
