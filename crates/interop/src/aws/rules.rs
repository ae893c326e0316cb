//! Configured-table analysis rules (aggregation, list, custom) to and
//! from Airlock's configured tables.

#[allow(clippy::wildcard_imports)]
use super::*;
use airlock_policy::{AggFunction, AnalysisRule, ConfiguredTable};

/// What an AWS rule does not say about a table, given on import.
#[derive(Debug, Clone, Default)]
pub struct TableSpec {
    /// The configured table's alias in Airlock.
    pub alias: String,
    /// The dataset it reads.
    pub dataset: String,
    /// The privacy unit, where the AWS rule does not name it (list and
    /// custom rules without differential privacy).
    pub identity: Option<String>,
    /// k, for custom rules (AWS custom rules set none).
    pub min_distinct_identities: Option<u64>,
    /// For custom rules (AWS gives no column roles): join columns,
    /// dimensions and measures.
    pub join: Vec<String>,
    /// Dimensions (custom rules).
    pub dimensions: Vec<String>,
    /// Measures (custom rules).
    pub measures: BTreeMap<String, Vec<AggFunction>>,
    /// AWS account id to Airlock member, for `allowedAnalysisProviders`.
    pub accounts: BTreeMap<String, String>,
}

fn no_or(ops: &Option<Vec<JoinOperator>>, at: &str, errors: &mut Vec<String>) {
    for (i, op) in ops.iter().flatten().enumerate() {
        if *op == JoinOperator::Or {
            errors.push(format!(
                "{at}.allowedJoinOperators[{i}]: Airlock joins only on equalities combined with AND; OR cannot be mapped"
            ));
        }
    }
}

fn no_additional(a: &Option<AdditionalAnalyses>, at: &str, errors: &mut Vec<String>) {
    if matches!(
        a,
        Some(AdditionalAnalyses::Allowed | AdditionalAnalyses::Required)
    ) {
        errors.push(format!(
            "{at}.additionalAnalyses: Airlock runs no additional (ML) analyses; only NOT_ALLOWED can be mapped"
        ));
    }
}

/// Imports an analysis rule document: `{"analysisRuleType": ...,
/// "analysisRulePolicy": {"v1": ...}}` or just `{"v1": ...}`.
pub fn import_rule(
    text: &str,
    spec: &TableSpec,
) -> Result<Converted<ConfiguredTable>, Vec<String>> {
    let (policy, prefix) = if text.contains("\"analysisRulePolicy\"") {
        let input: RuleInput = parse(text)?;
        let kind = match &input.analysis_rule_policy.v1 {
            RulePolicyV1::Aggregation(_) => RuleType::Aggregation,
            RulePolicyV1::List(_) => RuleType::List,
            RulePolicyV1::Custom(_) => RuleType::Custom,
        };
        if kind != input.analysis_rule_type {
            return Err(vec![
                "analysisRuleType: does not match the rule in analysisRulePolicy.v1".into(),
            ]);
        }
        (input.analysis_rule_policy.v1, "analysisRulePolicy.v1")
    } else {
        let p: RulePolicy = parse(text)?;
        (p.v1, "v1")
    };
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let table = match policy {
        RulePolicyV1::Aggregation(r) => import_aggregation(
            &r,
            spec,
            &format!("{prefix}.aggregation"),
            &mut errors,
            &mut notes,
        ),
        RulePolicyV1::List(r) => import_list(&r, spec, &format!("{prefix}.list"), &mut errors),
        RulePolicyV1::Custom(r) => import_custom(
            &r,
            spec,
            &format!("{prefix}.custom"),
            &mut errors,
            &mut notes,
        ),
    };
    match table {
        Some(t) if errors.is_empty() => Ok(Converted { value: t, notes }),
        _ => Err(errors),
    }
}

fn import_aggregation(
    r: &AggregationRule,
    spec: &TableSpec,
    at: &str,
    errors: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Option<ConfiguredTable> {
    let (identity, k) = match r.output_constraints.as_slice() {
        [one] => (one.column_name.clone(), one.minimum),
        [] => {
            errors.push(format!(
                "{at}.outputConstraints: Airlock needs exactly one COUNT_DISTINCT constraint, on the privacy unit"
            ));
            return None;
        }
        [first, rest @ ..] => {
            if let Some(i) = rest.iter().position(|c| c.column_name != first.column_name) {
                errors.push(format!(
                    "{at}.outputConstraints[{}]: Airlock has one privacy unit per table; constraints on two columns cannot be mapped",
                    i + 1
                ));
                return None;
            }
            let k = r
                .output_constraints
                .iter()
                .map(|c| c.minimum)
                .max()
                .unwrap_or(2);
            (first.column_name.clone(), k)
        }
    };
    if k < 2 {
        errors.push(format!(
            "{at}.outputConstraints[0].minimum: Airlock needs at least 2 distinct people per output row"
        ));
    }
    if let Some(given) = &spec.identity {
        if *given != identity {
            errors.push(format!(
                "{at}.outputConstraints[0].columnName: the identity given differs from the constrained column"
            ));
        }
    }
    no_or(&r.allowed_join_operators, at, errors);
    no_additional(&r.additional_analyses, at, errors);
    let mut measures: BTreeMap<String, Vec<AggFunction>> = BTreeMap::new();
    for (i, a) in r.aggregate_columns.iter().enumerate() {
        for (j, c) in a.column_names.iter().enumerate() {
            let here = format!("{at}.aggregateColumns[{i}].columnNames[{j}]");
            if *c == identity {
                if matches!(
                    a.function,
                    AwsAggFunction::CountDistinct | AwsAggFunction::Count
                ) {
                    continue; // counting people is what Airlock always allows
                }
                errors.push(format!("{here}: the privacy unit may only be counted"));
                continue;
            }
            if r.join_columns.contains(c) || r.dimension_columns.contains(c) {
                errors.push(format!(
                    "{here}: a join or dimension column cannot also be aggregated in Airlock"
                ));
                continue;
            }
            let f = match a.function {
                AwsAggFunction::Sum => AggFunction::Sum,
                AwsAggFunction::Avg => AggFunction::Avg,
                AwsAggFunction::Count => AggFunction::Count,
                AwsAggFunction::CountDistinct => AggFunction::CountDistinct,
                AwsAggFunction::SumDistinct => {
                    errors.push(format!(
                        "{at}.aggregateColumns[{i}].function: Airlock has no SUM_DISTINCT"
                    ));
                    continue;
                }
            };
            let fs = measures.entry(c.clone()).or_default();
            if !fs.contains(&f) {
                fs.push(f);
            }
        }
    }
    let mut functions = Vec::new();
    for (i, f) in r.scalar_functions.iter().enumerate() {
        if f.eq_ignore_ascii_case("CAST") {
            continue; // casts are expressions in Airlock, always allowed
        }
        match airlock_function(f) {
            Some(a) => {
                if !functions.iter().any(|x: &String| x == a) {
                    functions.push(a.to_string());
                }
            }
            None => notes.push(format!(
                "{at}.scalarFunctions[{i}]: '{}' has no Airlock equivalent; queries using it are refused (Airlock is narrower)",
                f.chars().take(40).collect::<String>()
            )),
        }
    }
    Some(ConfiguredTable {
        alias: spec.alias.clone(),
        dataset: spec.dataset.clone(),
        identity,
        join: r.join_columns.clone(),
        contracts: BTreeMap::new(),
        source_columns: BTreeMap::new(),
        dimensions: r.dimension_columns.clone(),
        measures,
        rule: AnalysisRule::Aggregation {
            min_distinct_identities: k,
            join_required: r.join_required.is_some(),
            differential_privacy: None,
            scalar_functions: Some(functions),
        },
    })
}

fn import_list(
    r: &ListRule,
    spec: &TableSpec,
    at: &str,
    errors: &mut Vec<String>,
) -> Option<ConfiguredTable> {
    no_or(&r.allowed_join_operators, at, errors);
    no_additional(&r.additional_analyses, at, errors);
    let Some(identity) = spec
        .identity
        .clone()
        .or_else(|| r.join_columns.first().cloned())
    else {
        errors.push(format!(
            "{at}.joinColumns: a list rule needs at least one join column"
        ));
        return None;
    };
    Some(ConfiguredTable {
        alias: spec.alias.clone(),
        dataset: spec.dataset.clone(),
        identity,
        join: r.join_columns.clone(),
        contracts: BTreeMap::new(),
        source_columns: BTreeMap::new(),
        dimensions: r.list_columns.clone(),
        measures: BTreeMap::new(),
        rule: AnalysisRule::List {
            list_columns: r.list_columns.clone(),
        },
    })
}

fn import_custom(
    r: &CustomRule,
    spec: &TableSpec,
    at: &str,
    errors: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Option<ConfiguredTable> {
    no_additional(&r.additional_analyses, at, errors);
    if r.differential_privacy.is_some() {
        errors.push(format!(
            "{at}.differentialPrivacy: its epsilon and noise come from AWS's privacy budget template, which is not part of this document; set differential_privacy on the Airlock rule instead"
        ));
    }
    let any_query = r.allowed_analyses.iter().any(|a| a == "ANY_QUERY");
    for (i, a) in r.allowed_analyses.iter().enumerate() {
        if a != "ANY_QUERY" && !a.starts_with("arn:") {
            errors.push(format!(
                "{at}.allowedAnalyses[{i}]: neither ANY_QUERY nor an analysis template ARN"
            ));
        }
    }
    if !any_query && !r.allowed_analyses.is_empty() {
        notes.push(format!(
            "{at}.allowedAnalyses: the templates are named by AWS ARNs; in Airlock each owner approves a template's content hash (import them with `interop aws import template`, then `template approve`)"
        ));
    }
    let mut analysts = Vec::new();
    for (i, account) in r.allowed_analysis_providers.iter().flatten().enumerate() {
        match spec.accounts.get(account) {
            Some(m) => analysts.push(m.clone()),
            None => errors.push(format!(
                "{at}.allowedAnalysisProviders[{i}]: no member is mapped to this account (give --account ID=MEMBER)"
            )),
        }
    }
    if any_query && analysts.is_empty() && r.allowed_analysis_providers.is_none() {
        errors.push(format!(
            "{at}.allowedAnalyses: ANY_QUERY by anyone is Airlock's aggregation rule, not a custom one; import it as such or name the providers"
        ));
    }
    let Some(k) = spec.min_distinct_identities else {
        errors.push(format!(
            "{at}: AWS custom rules set no minimum of distinct people per output row; Airlock always has one (give --k)"
        ));
        return None;
    };
    let Some(identity) = spec.identity.clone() else {
        errors.push(format!("{at}: give the privacy unit (--identity)"));
        return None;
    };
    for (i, c) in r.disallowed_output_columns.iter().flatten().enumerate() {
        if spec.dimensions.contains(c) {
            errors.push(format!(
                "{at}.disallowedOutputColumns[{i}]: the column is given as a dimension, which Airlock outputs"
            ));
        }
    }
    Some(ConfiguredTable {
        alias: spec.alias.clone(),
        dataset: spec.dataset.clone(),
        identity,
        join: spec.join.clone(),
        contracts: BTreeMap::new(),
        source_columns: BTreeMap::new(),
        dimensions: spec.dimensions.clone(),
        measures: spec.measures.clone(),
        rule: AnalysisRule::Custom {
            min_distinct_identities: k,
            join_required: false,
            differential_privacy: None,
            scalar_functions: None,
            templates_only: !any_query,
            analysts,
        },
    })
}

/// Exports a configured table's rule as a `CreateConfiguredTableAnalysisRule`
/// input; refuses, naming the part, what AWS cannot express without a
/// wider rule.
pub fn export_rule(t: &ConfiguredTable) -> Result<Converted<RuleInput>, Vec<String>> {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let at = format!("table '{}'", t.alias);
    for (col, contract) in &t.contracts {
        if contract != col {
            errors.push(format!(
                "{at}: contracts.{col}: AWS has no join contracts; without it the column would join any column"
            ));
        }
    }
    if !t.source_columns.is_empty() {
        notes.push(format!(
            "{at}: columns are named by their Airlock (canonical) names; in the data they are {}",
            t.source_columns
                .iter()
                .map(|(c, s)| format!("{s} for {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let policy = match &t.rule {
        AnalysisRule::Aggregation {
            min_distinct_identities,
            join_required,
            differential_privacy,
            scalar_functions,
        } => {
            if differential_privacy.is_some() {
                errors.push(format!(
                    "{at}: rule.differential_privacy: AWS Clean Rooms has differential privacy only on custom rules"
                ));
            }
            let mut by_function: Vec<AggregateColumn> = Vec::new();
            for (f, aws) in [
                (AggFunction::Sum, AwsAggFunction::Sum),
                (AggFunction::Avg, AwsAggFunction::Avg),
                (AggFunction::Count, AwsAggFunction::Count),
                (AggFunction::CountDistinct, AwsAggFunction::CountDistinct),
            ] {
                let mut cols: Vec<String> = t
                    .measures
                    .iter()
                    .filter(|(_, fs)| fs.contains(&f))
                    .map(|(c, _)| c.clone())
                    .collect();
                if f == AggFunction::CountDistinct {
                    cols.insert(0, t.identity.clone());
                }
                if !cols.is_empty() {
                    by_function.push(AggregateColumn {
                        column_names: cols,
                        function: aws,
                    });
                }
            }
            let listed: Vec<String> = match scalar_functions {
                Some(fs) => fs.clone(),
                None => airlock_policy::SCALAR_FUNCTIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
            let mut functions = vec!["CAST".to_string()];
            let mut left_out = Vec::new();
            for f in &listed {
                match aws_function(f) {
                    Some(a) => {
                        if !functions.iter().any(|x| x == a) {
                            functions.push(a.to_string());
                        }
                    }
                    None => left_out.push(f.clone()),
                }
            }
            if !left_out.is_empty() {
                notes.push(format!(
                    "{at}: scalar functions with no AWS equivalent are left out (the AWS rule is narrower): {}",
                    left_out.join(", ")
                ));
            }
            RulePolicyV1::Aggregation(AggregationRule {
                aggregate_columns: by_function,
                join_columns: t.join.clone(),
                join_required: join_required.then_some(JoinRequired::QueryRunner),
                allowed_join_operators: Some(vec![JoinOperator::And]),
                dimension_columns: t.dimensions.clone(),
                scalar_functions: functions,
                output_constraints: vec![OutputConstraint {
                    column_name: t.identity.clone(),
                    minimum: *min_distinct_identities,
                    kind: ConstraintType::CountDistinct,
                }],
                additional_analyses: Some(AdditionalAnalyses::NotAllowed),
            })
        }
        AnalysisRule::List { list_columns } => RulePolicyV1::List(ListRule {
            join_columns: t.join.clone(),
            allowed_join_operators: Some(vec![JoinOperator::And]),
            list_columns: list_columns.clone(),
            additional_analyses: Some(AdditionalAnalyses::NotAllowed),
        }),
        AnalysisRule::Custom { .. } => {
            errors.push(format!(
                "{at}: rule.min_distinct_identities: AWS custom rules have no minimum of distinct people per output row; exporting would drop k"
            ));
            RulePolicyV1::List(ListRule {
                join_columns: Vec::new(),
                allowed_join_operators: None,
                list_columns: Vec::new(),
                additional_analyses: None,
            })
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let kind = match &policy {
        RulePolicyV1::Aggregation(_) => RuleType::Aggregation,
        RulePolicyV1::List(_) => RuleType::List,
        RulePolicyV1::Custom(_) => RuleType::Custom,
    };
    Ok(Converted {
        value: RuleInput {
            analysis_rule_type: kind,
            analysis_rule_policy: RulePolicy { v1: policy },
            configured_table_identifier: None,
        },
        notes,
    })
}
