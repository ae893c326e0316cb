//! Rows: the class of every column through scans, projections, aliases,
//! CTEs and joins (with their join contracts), and the check of every row
//! expression (allowed functions, totality, no identity in the open).

#[allow(clippy::wildcard_imports)]
use super::*;

impl Checker<'_> {
    /// Checks a plan that runs on rows (below the aggregate) and returns the
    /// class of each of its output columns.
    pub(super) fn lineage(&mut self, plan: &LogicalPlan) -> R<Vec<Class>> {
        match plan {
            LogicalPlan::TableScan(s) => {
                let name = s.table_name.table().to_string();
                let info = match (s.table_name.schema(), self.tables.get(&name)) {
                    (None, Some(info)) => info,
                    _ => return Err(Refusal::new(
                        Control::Metadata,
                        "only configured tables may be read (no system tables or table functions)",
                    )
                    .table(s.table_name.to_string(), None)),
                };
                let scan = self.scans.len();
                self.scans.push(ScanRef {
                    table: name.clone(),
                    owner: info.owner.clone(),
                });
                s.projected_schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let column = f.name().clone();
                        match info.table.role(&column) {
                            Some(ColumnRole::Identity { .. }) => {
                                Ok(Class::Identity { scan, column })
                            }
                            Some(ColumnRole::Join) => Ok(Class::Join {
                                scan,
                                contract: info.table.contract(&column),
                                column,
                            }),
                            Some(ColumnRole::Dimension) => Ok(Class::Dimension {
                                sources: vec![(scan, column)],
                            }),
                            Some(ColumnRole::Measure(_)) => Ok(Class::Measure { scan, column }),
                            None => Err(Refusal::new(Control::ColumnRole, "column has no role")
                                .table(&name, Some(info.table.rule.kind()))
                                .column(column)),
                        }
                    })
                    .collect()
            }
            LogicalPlan::Projection(p) => {
                let input = self.lineage(&p.input)?;
                p.expr
                    .iter()
                    .map(|e| self.classify(e, &input, p.input.schema(), Use::Expression))
                    .collect()
            }
            LogicalPlan::Filter(f) => {
                let input = self.lineage(&f.input)?;
                self.check_row_expr(&f.predicate, &input, f.input.schema(), Use::Filter)?;
                Ok(input)
            }
            LogicalPlan::SubqueryAlias(a) => self.lineage(&a.input),
            LogicalPlan::Join(j) => {
                let left = self.lineage(&j.left)?;
                let right = self.lineage(&j.right)?;
                if j.join_type != JoinType::Inner {
                    return Err(Refusal::new(
                        Control::Join,
                        format!("only inner joins are allowed (found {})", j.join_type),
                    ));
                }
                // The SQL planner leaves `ON a = b` in the join filter; the
                // optimizer later turns it into equi-join keys. Accept only a
                // conjunction of column equalities, one side from each input.
                let mut pairs: Vec<(Expr, Expr)> = j.on.clone();
                if let Some(filter) = &j.filter {
                    for c in split_conjunction(filter) {
                        let Expr::BinaryExpr(b) = c else {
                            return Err(Refusal::new(
                                Control::Join,
                                "join conditions other than equality of join columns are not allowed",
                            ));
                        };
                        let (Operator::Eq, Expr::Column(l), Expr::Column(r)) =
                            (b.op, b.left.as_ref(), b.right.as_ref())
                        else {
                            return Err(Refusal::new(
                                Control::Join,
                                "join conditions other than equality of join columns are not allowed",
                            ));
                        };
                        let in_left =
                            |c: &datafusion::common::Column| j.left.schema().has_column(c);
                        let in_right =
                            |c: &datafusion::common::Column| j.right.schema().has_column(c);
                        if in_left(l) && in_right(r) {
                            pairs.push((b.left.as_ref().clone(), b.right.as_ref().clone()));
                        } else if in_left(r) && in_right(l) {
                            pairs.push((b.right.as_ref().clone(), b.left.as_ref().clone()));
                        } else {
                            return Err(Refusal::new(
                                Control::Join,
                                "a join condition must compare a column of each side",
                            ));
                        }
                    }
                }
                if pairs.is_empty() {
                    return Err(Refusal::new(
                        Control::Join,
                        "cross joins are not allowed; join with = on join columns",
                    ));
                }
                for (l, r) in &pairs {
                    let lc = join_key(l, &left, j.left.schema())?;
                    let rc = join_key(r, &right, j.right.schema())?;
                    let (ls, lcontract) = self.join_contract(lc)?;
                    let (rs, rcontract) = self.join_contract(rc)?;
                    if lcontract != rcontract {
                        return Err(Refusal::new(
                            Control::Join,
                            "the two join columns belong to different join contracts and can never match",
                        ));
                    }
                    self.joins.push((ls, rs));
                    if matches!(lc, Class::Identity { .. }) && matches!(rc, Class::Identity { .. })
                    {
                        self.identity_joins.push((ls, rs));
                    }
                }
                Ok(left.into_iter().chain(right).collect())
            }
            LogicalPlan::Sort(s) if self.list_mode => {
                let input = self.lineage(&s.input)?;
                for e in &s.expr {
                    self.check_row_expr(&e.expr, &input, s.input.schema(), Use::Filter)?;
                }
                Ok(input)
            }
            LogicalPlan::Limit(l) if self.list_mode => self.lineage(&l.input),
            LogicalPlan::Distinct(Distinct::All(input)) if self.list_mode => self.lineage(input),
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => Err(Refusal::new(
                Control::NestedAggregation,
                "ORDER BY or LIMIT before the aggregate would select individual rows",
            )),
            LogicalPlan::Distinct(Distinct::On(_)) => Err(Refusal::new(
                Control::UnsupportedPlan,
                "DISTINCT ON is not allowed: it selects individual rows",
            )),
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => Err(Refusal::new(
                Control::NestedAggregation,
                "aggregating an aggregate (or DISTINCT below an aggregate) is not allowed",
            )),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Err(Refusal::new(
                Control::UnsupportedPlan,
                "inline rows (VALUES, SELECT without FROM) are not allowed",
            )),
            other => Err(Refusal::new(
                Control::UnsupportedPlan,
                format!("{} is not allowed", node_name(other)),
            )),
        }
    }

    pub(super) fn join_contract(&self, class: &Class) -> R<(usize, String)> {
        match class {
            Class::Join { scan, contract, .. } => Ok((*scan, contract.clone())),
            Class::Identity { scan, column } => {
                let info = self.info(*scan);
                if info.table.join.iter().any(|j| j == column) {
                    Ok((*scan, info.table.contract(column)))
                } else {
                    Err(self.refuse_at(
                        Control::Join,
                        *scan,
                        column,
                        "this identity column is not a join column",
                    ))
                }
            }
            Class::Dimension { sources } => match sources.first() {
                Some((scan, column)) => Err(self.refuse_at(
                    Control::Join,
                    *scan,
                    column,
                    "joins are allowed only on join columns",
                )),
                None => Err(Refusal::new(
                    Control::Join,
                    "joins are allowed only on join columns",
                )),
            },
            Class::Measure { scan, column } => Err(self.refuse_at(
                Control::Join,
                *scan,
                column,
                "joins are allowed only on join columns",
            )),
        }
    }

    /// Class of an expression producing a column (projection item or group key).
    pub(super) fn classify(
        &self,
        e: &Expr,
        input: &[Class],
        schema: &DFSchema,
        usage: Use,
    ) -> R<Class> {
        match e {
            Expr::Alias(a) => self.classify(&a.expr, input, schema, usage),
            Expr::Column(c) => {
                let idx = schema.index_of_column(c).map_err(internal)?;
                Ok(input[idx].clone())
            }
            other => {
                let sources = self.check_row_expr(other, input, schema, usage)?;
                Ok(Class::Dimension { sources })
            }
        }
    }

    /// Checks an expression evaluated on rows: every column it reads must be a
    /// dimension, every function allowed, and nothing may fail on one value.
    /// Returns the dimension columns it reads.
    pub(super) fn check_row_expr(
        &self,
        e: &Expr,
        input: &[Class],
        schema: &DFSchema,
        usage: Use,
    ) -> R<Vec<(usize, String)>> {
        let mut sources = Vec::new();
        first_refusal(e, |x| {
            match x {
                Expr::Column(c) => match schema.index_of_column(c) {
                    Err(err) => Some(internal(err)),
                    Ok(idx) => match &input[idx] {
                        Class::Dimension { sources: s } => {
                            sources.extend(s.iter().cloned());
                            None
                        }
                        Class::Identity { scan, column } | Class::Join { scan, column, .. } => {
                            Some(match usage {
                                Use::Filter => self.refuse_at(
                                    Control::RestrictedFilter,
                                    *scan,
                                    column,
                                    "identity and join columns cannot be filtered on",
                                ),
                                Use::Expression | Use::Group => self.refuse_at(
                                    Control::IdentityInExpression,
                                    *scan,
                                    column,
                                    "identity and join columns cannot be used in expressions",
                                ),
                            })
                        }
                        Class::Measure { scan, column } => Some(match usage {
                            Use::Filter => self.refuse_at(
                                Control::RestrictedFilter,
                                *scan,
                                column,
                                "measures cannot be filtered on",
                            ),
                            Use::Group => self.refuse_at(
                                Control::ColumnRole,
                                *scan,
                                column,
                                "a measure cannot be used as a dimension; aggregate it with an allowed function",
                            ),
                            Use::Expression => self.refuse_at(
                                Control::ExpressionInAggregate,
                                *scan,
                                column,
                                "expressions on measures are not allowed; aggregate the plain column",
                            ),
                        }),
                    },
                },
                Expr::Literal(..)
                | Expr::Alias(_)
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
                | Expr::TryCast(_) => None,
                // Whether an operator or a cast can fail on a value is
                // the totality check's question (`total.rs`).
                Expr::BinaryExpr(_) | Expr::Cast(_) => None,
                Expr::ScalarFunction(f) => {
                    let name = f.func.name().to_ascii_lowercase();
                    if !scalar_allowed(&name) {
                        Some(Refusal::new(
                            Control::UnknownFunction,
                            format!("function {name} is not on the allowlist"),
                        ))
                    } else if !ALL_ARGUMENTS_FREE.contains(&name.as_str())
                        && f.args.iter().filter(|a| !a.column_refs().is_empty()).count() > 1
                    {
                        Some(Refusal::new(
                            Control::ErrorOracle,
                            format!("only one argument of {name} may read a column"),
                        ))
                    } else {
                        None
                    }
                }
                Expr::AggregateFunction(_) => Some(Refusal::new(
                    Control::NestedAggregation,
                    "aggregates are not allowed here",
                )),
                Expr::WindowFunction(_) => Some(Refusal::new(
                    Control::WindowFunction,
                    "window functions are not allowed",
                )),
                other => Some(Refusal::new(
                    Control::UnsupportedPlan,
                    format!("expression {} is not allowed", other.variant_name()),
                )),
        }
        })?;
        Ok(sources)
    }
}

pub(super) fn join_key<'c>(e: &Expr, input: &'c [Class], schema: &DFSchema) -> R<&'c Class> {
    match peel(e) {
        Expr::Column(c) => {
            let idx = schema.index_of_column(c).map_err(internal)?;
            Ok(&input[idx])
        }
        _ => Err(Refusal::new(
            Control::Join,
            "join keys must be plain join columns compared with =",
        )),
    }
}
