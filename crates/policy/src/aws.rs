//! AWS Clean Rooms formats: configured-table analysis rules
//! (`AnalysisRuleAggregation`, `AnalysisRuleList`, `AnalysisRuleCustom`, as
//! the `analysisRulePolicy.v1` of `CreateConfiguredTableAnalysisRule`) and
//! analysis templates (the input of `CreateAnalysisTemplate`), to and from
//! Airlock's configured tables and templates.
//!
//! The principle: nothing is dropped silently, and nothing is widened.
//!
//! - **Import**: every field is mapped or refused with its JSON path (unknown
//!   fields and wrong types too). Where Airlock ends up *narrower* than the
//!   AWS document (a scalar function Airlock does not have), a note says so.
//! - **Export**: a part of an Airlock rule that AWS cannot express is
//!   refused by name when leaving it out would make the AWS rule *wider*
//!   (differential privacy on an aggregation rule, join contracts, k on a
//!   custom rule); leaving out a part that only narrows AWS (an Airlock
//!   function AWS does not list) is reported as a note.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{AggFunction, AnalysisRule, ConfiguredTable};
use crate::template::{ParamSpec, ParamType, Template, Written};

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT: usize = 1 << 20;

/// A converted value with notes on where Airlock is narrower than (or
/// cannot express) the source.
#[derive(Debug, Clone)]
pub struct Converted<T> {
    /// The result.
    pub value: T,
    /// What the reader should know (never a widening: those are errors).
    pub notes: Vec<String>,
}

// ------------------------------------------------------------ AWS shapes

/// `CreateConfiguredTableAnalysisRule` input (its identifier optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleInput {
    /// `AGGREGATION`, `LIST` or `CUSTOM`.
    pub analysis_rule_type: RuleType,
    /// The policy.
    pub analysis_rule_policy: RulePolicy,
    /// The configured table (ignored on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_table_identifier: Option<String>,
}

/// `analysisRuleType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuleType {
    /// Aggregation.
    Aggregation,
    /// List.
    List,
    /// Custom.
    Custom,
}

/// `ConfiguredTableAnalysisRulePolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePolicy {
    /// The only version.
    pub v1: RulePolicyV1,
}

/// `ConfiguredTableAnalysisRulePolicyV1` (a union).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RulePolicyV1 {
    /// `AnalysisRuleList`.
    List(ListRule),
    /// `AnalysisRuleAggregation`.
    Aggregation(AggregationRule),
    /// `AnalysisRuleCustom`.
    Custom(CustomRule),
}

/// `AnalysisRuleAggregation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AggregationRule {
    /// Columns that may be aggregated, by function.
    pub aggregate_columns: Vec<AggregateColumn>,
    /// Columns that may be joined on.
    pub join_columns: Vec<String>,
    /// `QUERY_RUNNER`: queries must join this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_required: Option<JoinRequired>,
    /// `AND` / `OR` between join conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_join_operators: Option<Vec<JoinOperator>>,
    /// Columns that may be grouped, filtered and output.
    pub dimension_columns: Vec<String>,
    /// Scalar functions allowed on dimensions.
    pub scalar_functions: Vec<String>,
    /// Minimum distinct counts per output row.
    pub output_constraints: Vec<OutputConstraint>,
    /// ML and other analyses over the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_analyses: Option<AdditionalAnalyses>,
}

/// `AggregateColumn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AggregateColumn {
    /// Columns.
    pub column_names: Vec<String>,
    /// The function.
    pub function: AwsAggFunction,
}

/// `AggregateFunctionName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AwsAggFunction {
    /// SUM.
    Sum,
    /// SUM(DISTINCT).
    SumDistinct,
    /// COUNT.
    Count,
    /// COUNT(DISTINCT).
    CountDistinct,
    /// AVG.
    Avg,
}

/// `joinRequired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JoinRequired {
    /// The querying member must join.
    QueryRunner,
}

/// `JoinOperator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JoinOperator {
    /// OR.
    Or,
    /// AND.
    And,
}

/// `AdditionalAnalyses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AdditionalAnalyses {
    /// Allowed.
    Allowed,
    /// Required.
    Required,
    /// Not allowed.
    NotAllowed,
}

/// `AggregationConstraint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputConstraint {
    /// Column counted.
    pub column_name: String,
    /// Minimum per output row.
    pub minimum: u64,
    /// Always `COUNT_DISTINCT`.
    #[serde(rename = "type")]
    pub kind: ConstraintType,
}

/// `AggregationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConstraintType {
    /// COUNT(DISTINCT).
    CountDistinct,
}

/// `AnalysisRuleList`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListRule {
    /// Columns that may be joined on.
    pub join_columns: Vec<String>,
    /// `AND` / `OR` between join conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_join_operators: Option<Vec<JoinOperator>>,
    /// Columns that may be listed.
    pub list_columns: Vec<String>,
    /// ML and other analyses over the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_analyses: Option<AdditionalAnalyses>,
}

/// `AnalysisRuleCustom`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomRule {
    /// Template ARNs, or `ANY_QUERY`.
    pub allowed_analyses: Vec<String>,
    /// Account ids that may run analyses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_analysis_providers: Option<Vec<String>>,
    /// ML and other analyses over the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_analyses: Option<AdditionalAnalyses>,
    /// Columns never output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallowed_output_columns: Option<Vec<String>>,
    /// Differential privacy: the user identifier columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential_privacy: Option<DifferentialPrivacy>,
}

/// `DifferentialPrivacyConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DifferentialPrivacy {
    /// User identifier columns.
    pub columns: Vec<DpColumn>,
}

/// `DifferentialPrivacyColumn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpColumn {
    /// Column name.
    pub name: String,
}

/// `CreateAnalysisTemplate` input (membership optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplate {
    /// Name.
    pub name: String,
    /// Always `SQL`.
    pub format: TemplateFormat,
    /// The SQL text.
    pub source: TemplateSource,
    /// Parameters, referenced as `:name` in the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_parameters: Option<Vec<AnalysisParameter>>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Membership (ignored on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_identifier: Option<String>,
}

/// `AnalysisFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateFormat {
    /// SQL.
    Sql,
}

/// `AnalysisSource` (only `text`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSource {
    /// The SQL.
    pub text: String,
}

/// `AnalysisParameter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisParameter {
    /// Name.
    pub name: String,
    /// AWS type name (`VARCHAR`, `BIGINT`, `DATE`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Default value, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

// ------------------------------------------------------------ parsing

/// Parses a JSON document into `T`, naming the JSON path of the first
/// problem (unknown field, wrong type, missing field, truncated text).
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Vec<String>> {
    if text.len() > MAX_DOCUMENT {
        return Err(vec![format!(
            "the document is {} bytes, more than the {MAX_DOCUMENT} accepted",
            text.len()
        )]);
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        vec![format!("{path}: {}", e.into_inner())]
    })?;
    Ok(value)
}

/// Airlock name of an AWS scalar function, if Airlock has it.
fn airlock_function(aws: &str) -> Option<&'static str> {
    Some(match aws.to_ascii_uppercase().as_str() {
        "ABS" => "abs",
        "CEILING" => "ceil",
        "FLOOR" => "floor",
        "LOWER" => "lower",
        "UPPER" => "upper",
        "ROUND" => "round",
        "TRIM" => "trim",
        "RTRIM" => "rtrim",
        "SUBSTRING" => "substring",
        "COALESCE" => "coalesce",
        _ => return None,
    })
}

/// AWS name of an Airlock scalar function, if AWS has it.
fn aws_function(airlock: &str) -> Option<&'static str> {
    Some(match airlock {
        "abs" => "ABS",
        "ceil" => "CEILING",
        "floor" => "FLOOR",
        "lower" => "LOWER",
        "upper" => "UPPER",
        "round" => "ROUND",
        "trim" => "TRIM",
        "rtrim" => "RTRIM",
        "substring" | "substr" => "SUBSTRING",
        "coalesce" => "COALESCE",
        _ => return None,
    })
}

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
                None => crate::config::SCALAR_FUNCTIONS
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

/// Rewrites `:name` parameter references (outside quoted strings and
/// comments) as `$name`, or back, for the declared names only.
fn swap_params(sql: &str, names: &[String], from: char, to: char) -> String {
    let mut out = String::with_capacity(sql.len());
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            out.push(c);
            i += 1;
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(chars[i]);
                i += 1;
            }
            continue;
        }
        // `::` is a cast, never a parameter.
        if c == from && chars.get(i + 1) != Some(&from) && (i == 0 || chars[i - 1] != from) {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            if names.contains(&name) {
                out.push(to);
                out.push_str(&name);
                i = j;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Imports an AWS analysis template as an Airlock template serving
/// `purpose`. AWS parameters carry no allowed values: each becomes allowed
/// only its default value (a note says so), and one without a default is
/// refused.
pub fn import_template(text: &str, purpose: &str) -> Result<Converted<Template>, Vec<String>> {
    let t: AnalysisTemplate = parse(text)?;
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let name = t
        .name
        .to_ascii_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    if name != t.name {
        notes.push(format!(
            "name: '{}' becomes '{name}' (Airlock template names are lowercase identifiers)",
            t.name
        ));
    }
    let mut params = BTreeMap::new();
    let mut names = Vec::new();
    for (i, p) in t.analysis_parameters.iter().flatten().enumerate() {
        let at = format!("analysisParameters[{i}]");
        let ok_name = p
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && p.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok_name {
            errors.push(format!(
                "{at}.name: Airlock parameter names are lowercase identifiers"
            ));
            continue;
        }
        let kind = match p.kind.to_ascii_uppercase().as_str() {
            "SMALLINT" | "INTEGER" | "INT" | "BIGINT" | "TINYINT" | "SHORT" | "LONG" => {
                ParamType::Int
            }
            "DECIMAL" | "NUMERIC" | "REAL" | "DOUBLE_PRECISION" | "DOUBLE" | "FLOAT" => {
                ParamType::Float
            }
            "CHAR" | "CHARACTER" | "VARCHAR" | "STRING" => ParamType::String,
            "DATE" => ParamType::Date,
            other => {
                errors.push(format!(
                    "{at}.type: {} has no Airlock parameter type (int, float, string, date)",
                    other.chars().take(40).collect::<String>()
                ));
                continue;
            }
        };
        let Some(default) = &p.default_value else {
            errors.push(format!(
                "{at}.defaultValue: Airlock verifies every value a parameter may take before approval, and AWS declares none; give a defaultValue (it becomes the only allowed value) or declare the parameter in the collaboration file"
            ));
            continue;
        };
        let written = match kind {
            ParamType::Int => default
                .trim()
                .parse::<i64>()
                .map(Written::Int)
                .map_err(|_| ()),
            ParamType::Float => default
                .trim()
                .parse::<f64>()
                .map(Written::Float)
                .map_err(|_| ()),
            ParamType::String | ParamType::Date => Ok(Written::Str(default.clone())),
        };
        let Ok(written) = written else {
            errors.push(format!(
                "{at}.defaultValue: not a value of type {}",
                kind.name()
            ));
            continue;
        };
        notes.push(format!(
            "{at}: parameter '{}' may take only its default value; widen `allowed` (or give min and max) in the collaboration file",
            p.name
        ));
        names.push(p.name.clone());
        params.insert(
            p.name.clone(),
            ParamSpec {
                kind,
                allowed: vec![written.clone()],
                min: None,
                max: None,
                default: Some(written),
            },
        );
    }
    if let Some(d) = &t.description {
        notes.push(format!(
            "description: not kept (Airlock templates carry none): {}",
            d.chars().take(80).collect::<String>()
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Converted {
        value: Template {
            name,
            purpose: purpose.to_string(),
            sql: swap_params(&t.source.text, &names, ':', '$'),
            analysts: Vec::new(),
            params,
        },
        notes,
    })
}

/// Exports an Airlock template as a `CreateAnalysisTemplate` input. AWS
/// cannot limit a parameter's values, name the analysts or the purpose:
/// unless `accept_wider`, a template whose parameters are limited (all of
/// them are) or that names analysts is refused, naming each part.
pub fn export_template(
    t: &Template,
    accept_wider: bool,
) -> Result<Converted<AnalysisTemplate>, Vec<String>> {
    let mut wider = Vec::new();
    let mut params = Vec::new();
    for (name, p) in &t.params {
        let kind = match p.kind {
            ParamType::Int => "BIGINT",
            ParamType::Float => "DOUBLE_PRECISION",
            ParamType::String => "VARCHAR",
            ParamType::Date => "DATE",
        };
        let is_only_default = p.allowed.len() == 1 && p.default.as_ref() == p.allowed.first();
        if !is_only_default {
            wider.push(format!(
                "params.{name}: AWS cannot limit a parameter's values (any {kind} would be accepted)"
            ));
        }
        params.push(AnalysisParameter {
            name: name.clone(),
            kind: kind.to_string(),
            default_value: p.default.as_ref().map(|w| match w {
                Written::Int(i) => i.to_string(),
                Written::Float(f) => f.to_string(),
                Written::Str(s) => s.clone(),
            }),
        });
    }
    if !t.analysts.is_empty() {
        wider.push("analysts: AWS templates do not name who may run them".into());
    }
    let mut notes = vec![format!(
        "purpose: AWS templates carry none (this one serves '{}')",
        t.purpose
    )];
    if !wider.is_empty() && !accept_wider {
        return Err(wider
            .into_iter()
            .map(|w| format!("template '{}': {w}", t.name))
            .collect());
    }
    notes.extend(wider.into_iter().map(|w| format!("accepted wider: {w}")));
    let names: Vec<String> = t.params.keys().cloned().collect();
    Ok(Converted {
        value: AnalysisTemplate {
            name: t.name.clone(),
            format: TemplateFormat::Sql,
            source: TemplateSource {
                text: swap_params(&t.sql, &names, '$', ':'),
            },
            analysis_parameters: (!params.is_empty()).then_some(params),
            description: None,
            membership_identifier: None,
        },
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TableSpec {
        TableSpec {
            alias: "purchases".into(),
            dataset: "orders".into(),
            ..TableSpec::default()
        }
    }

    #[test]
    fn parameters_are_swapped_outside_strings_and_casts() {
        let names = vec!["region".to_string()];
        let sql = "SELECT ':region', x::text FROM t WHERE r = :region -- :region\nAND s = :regions";
        let out = swap_params(sql, &names, ':', '$');
        assert_eq!(
            out,
            "SELECT ':region', x::text FROM t WHERE r = $region -- :region\nAND s = :regions"
        );
        assert_eq!(swap_params(&out, &names, '$', ':'), sql);
    }

    #[test]
    fn unknown_fields_wrong_types_and_truncation_name_the_path() {
        let bad = [
            (
                r#"{"v1": {"aggregation": {"aggregateColumns": [], "joinColumns": [], "dimensionColumns": [], "scalarFunctions": [], "outputConstraints": [], "colour": 1}}}"#,
                "v1.aggregation.colour: unknown field `colour`",
            ),
            (
                r#"{"v1": {"aggregation": {"aggregateColumns": [{"columnNames": ["x"], "function": "MEDIAN"}], "joinColumns": [], "dimensionColumns": [], "scalarFunctions": [], "outputConstraints": []}}}"#,
                "v1.aggregation.aggregateColumns[0].function: unknown variant `MEDIAN`",
            ),
            (
                r#"{"v1": {"list": {"joinColumns": "email", "listColumns": []}}}"#,
                "v1.list.joinColumns: invalid type: string",
            ),
            (
                r#"{"v1": {"list": {"joinColumns": ["email"], "listCol"#,
                "EOF while parsing",
            ),
            (r#"{"v1": {"crypto": {}}}"#, "v1: unknown variant `crypto`"),
        ];
        for (doc, want) in bad {
            let e = import_rule(doc, &spec()).expect_err(doc);
            assert!(e[0].contains(want), "{want}: {e:?}");
        }
        let huge = format!(
            "{{\"v1\": {{\"list\": {{\"joinColumns\": [\"{}\"]}}}}}}",
            "x".repeat(MAX_DOCUMENT)
        );
        assert!(import_rule(&huge, &spec()).expect_err("huge")[0].contains("more than"));
    }
}
