//! The AWS Clean Rooms documents, field for field (`camelCase` as AWS
//! writes them; unknown fields are errors).

use serde::{Deserialize, Serialize};

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
