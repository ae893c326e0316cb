//! Templates in the guard: resolving a run, binding its values into the
//! plan, the custom rule, owners' approvals, purposes, and static
//! verification at approval.
//!
//! A template's parameters are DataFusion placeholders (`$segment`). The
//! template text is planned with them in place, and the typed values are
//! then substituted into the plan as literals: a value never becomes SQL
//! text, so no value can change the query's shape.

use std::collections::{BTreeSet, HashMap};

use airlock_policy::{Ability, Collaboration, Control, QuerySpec, Refusal, RunRefusal, Template};
use airlock_protocol::TemplateRun;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::check::TableInfo;
use crate::{CheckedQuery, Guard, GuardError, QueryKind};

/// SQL text, template run and purpose of what an analyst asks for.
pub(crate) type Resolved = (String, Option<TemplateRun>, Option<String>);

pub(crate) fn resolve(collab: &Collaboration, spec: &QuerySpec) -> Result<Resolved, GuardError> {
    match (&spec.sql, &spec.template) {
        (Some(_), Some(_)) | (None, None) => Err(GuardError::BadInput(
            "give either SQL or a template to run, not both".into(),
        )),
        (Some(sql), None) => {
            if !spec.params.is_empty() {
                return Err(GuardError::BadInput(
                    "parameters are given only to a template".into(),
                ));
            }
            Ok((sql.clone(), None, spec.purpose.clone()))
        }
        (None, Some(name)) => {
            let Some(t) = collab.template(name) else {
                return Err(GuardError::BadInput(format!(
                    "collaboration '{}' has no template named '{}' (or with that hash)",
                    collab.name(),
                    name.chars().take(80).collect::<String>()
                )));
            };
            let run = t
                .bind(&spec.params)
                .map_err(|p| GuardError::BadInput(p.join("; ")))?;
            // A purpose given must be the template's: `admit_run` checks.
            let purpose = spec.purpose.clone().unwrap_or_else(|| t.purpose.clone());
            Ok((t.sql.clone(), Some(run), Some(purpose)))
        }
    }
}

/// The template a run is of, admitted for `querier` (one home:
/// [`Collaboration::admit_run`]; the node adds its member's approval).
pub(crate) fn template_of<'c>(
    collab: &'c Collaboration,
    run: &TemplateRun,
    querier: &str,
    purpose: Option<&str>,
) -> Result<&'c Template, GuardError> {
    collab
        .admit_run(run, querier, purpose, None)
        .map_err(|e| match e {
            RunRefusal::Refused(r) => GuardError::Refused(r),
            RunRefusal::BadValues(why) => GuardError::BadInput(why),
        })
}

/// Substitutes a run's values for the template's placeholders. Ad hoc SQL
/// may not hold placeholders; a template's text must use exactly its
/// declared parameters.
pub(crate) fn bind(
    plan: LogicalPlan,
    template: Option<&Template>,
    run: Option<&TemplateRun>,
) -> Result<LogicalPlan, GuardError> {
    let used: BTreeSet<String> = plan
        .get_parameter_types()
        .map_err(|e| GuardError::BadInput(e.strip_backtrace()))?
        .into_keys()
        .map(|k| k.trim_start_matches('$').to_string())
        .collect();
    let (Some(t), Some(run)) = (template, run) else {
        if used.is_empty() {
            return Ok(plan);
        }
        return Err(GuardError::BadInput(
            "parameters ($name) are bound only in analysis templates".into(),
        ));
    };
    let declared: BTreeSet<String> = t.params.keys().cloned().collect();
    if let Some(u) = used.difference(&declared).next() {
        return Err(GuardError::BadInput(format!(
            "template '{}' uses ${u}, which it does not declare",
            t.name
        )));
    }
    if let Some(d) = declared.difference(&used).next() {
        return Err(GuardError::BadInput(format!(
            "template '{}' declares parameter '{d}' but its SQL never uses ${d}",
            t.name
        )));
    }
    let values: HashMap<String, ScalarValue> = run
        .params
        .iter()
        .map(|(k, v)| (k.clone(), airlock_protocol::expr::scalar(v)))
        .collect();
    plan.with_param_values(ParamValues::from(values))
        .map_err(|e| GuardError::BadInput(e.strip_backtrace()))
}

/// The custom rule of every table read, and owners' approvals of a run.
pub(crate) fn check_rules(
    collab: &Collaboration,
    tables: &HashMap<String, TableInfo>,
    checked: &CheckedQuery,
    run: Option<&TemplateRun>,
    approvals: bool,
) -> Result<(), Refusal> {
    for s in &checked.scans {
        let rule = &tables[&s.table].table.rule;
        rule.admits(&checked.querier, run.is_some())
            .map_err(|why| {
                Refusal::new(Control::CustomRule, why).table(&s.table, Some(rule.kind()))
            })?;
    }
    let Some(run) = run.filter(|_| approvals) else {
        return Ok(());
    };
    for s in &checked.scans {
        if !collab.approves(&s.owner, &run.hash) {
            let rule = tables[&s.table].table.rule.kind();
            return Err(Refusal::new(
                Control::TemplateApproval,
                format!(
                    "template '{}' (hash {}) is not approved at this hash by '{}', who owns the table",
                    run.name,
                    &run.hash[..12.min(run.hash.len())],
                    s.owner
                ),
            )
            .table(&s.table, Some(rule)));
        }
    }
    Ok(())
}

/// Names of the scalar functions a plan calls.
pub(crate) fn functions_used(plan: &LogicalPlan) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        for e in node.expressions() {
            let _ = e.apply(|x| {
                if let Expr::ScalarFunction(f) = x {
                    out.insert(f.func.name().to_ascii_lowercase());
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// Every scalar function used is among those each table read allows.
pub(crate) fn check_functions(
    tables: &HashMap<String, TableInfo>,
    checked: &CheckedQuery,
    used: &BTreeSet<String>,
) -> Result<(), Refusal> {
    for s in &checked.scans {
        let rule = &tables[&s.table].table.rule;
        let Some(allowed) = rule.scalar_functions() else {
            continue;
        };
        if let Some(f) = used.iter().find(|f| !allowed.iter().any(|a| a == *f)) {
            return Err(Refusal::new(
                Control::UnknownFunction,
                format!(
                    "function '{f}' is not among the scalar functions this table's rule allows"
                ),
            )
            .table(&s.table, Some(rule.kind())));
        }
    }
    Ok(())
}

/// A list output names the purpose it serves, when the collaboration
/// declares purposes.
pub(crate) fn check_list_purpose(
    collab: &Collaboration,
    checked: &CheckedQuery,
    purpose: Option<&str>,
) -> Result<(), Refusal> {
    let purposes = &collab.config().collaboration.purposes;
    if checked.kind == QueryKind::List && purpose.is_none() && !purposes.is_empty() {
        return Err(Refusal::new(
            Control::Purpose,
            format!(
                "a list output must name the purpose it serves (one of: {})",
                purposes.join(", ")
            ),
        ));
    }
    Ok(())
}

/// How many reasons a failed verification reports before summarising.
const MAX_REASONS: usize = 20;

pub(crate) async fn verify(guard: &Guard, t: &Template) -> Result<usize, Vec<String>> {
    let collab = &guard.collab;
    let mut problems: Vec<String> = Vec::new();
    let declared: BTreeSet<&str> = collab
        .config()
        .collaboration
        .purposes
        .iter()
        .map(String::as_str)
        .collect();
    let analysts: BTreeSet<&str> = collab
        .config()
        .members
        .iter()
        .filter(|m| m.abilities.contains(&Ability::Query))
        .map(|m| m.name.as_str())
        .collect();
    problems.extend(t.problems(&declared, &analysts));
    if !problems.is_empty() {
        return Err(problems);
    }
    let runners: Vec<&str> = if t.analysts.is_empty() {
        analysts.into_iter().collect()
    } else {
        t.analysts.iter().map(String::as_str).collect()
    };
    let combos = t.combinations().map_err(|n| {
        vec![format!(
            "its parameters allow {n} combinations, more than can be verified"
        )]
    })?;
    let mut passed = 0;
    let mut failed = 0;
    for params in &combos {
        let run = TemplateRun {
            name: t.name.clone(),
            hash: t.hash(),
            params: params.clone(),
        };
        for who in &runners {
            match guard
                .check_run(&t.sql, Some(&run), Some(&t.purpose), who, false)
                .await
            {
                Ok(_) => passed += 1,
                Err(GuardError::Refused(r)) => {
                    failed += 1;
                    let values: Vec<String> = params
                        .iter()
                        .map(|(k, v)| format!("{k}={}", airlock_policy::template::literal_text(v)))
                        .collect();
                    let reason = format!("run by '{who}' with {{{}}}: {r}", values.join(", "));
                    if problems.len() < MAX_REASONS {
                        problems.push(reason);
                    }
                }
                // A template that does not plan fails the same way for
                // every value: say it once.
                Err(GuardError::BadInput(m)) => {
                    return Err(vec![format!("the template's SQL does not plan: {m}")])
                }
                Err(GuardError::Internal(m)) => return Err(vec![format!("internal error: {m}")]),
            }
        }
    }
    if failed > problems.len() {
        problems.push(format!("and {} more failing runs", failed - problems.len()));
    }
    if problems.is_empty() {
        Ok(passed)
    } else {
        Err(problems)
    }
}
