//! The collaboration configuration: parsed from TOML, validated on load.
//!
//! [`CollaborationConfig`] is the file as written; [`Collaboration::from_toml`]
//! validates it and returns every problem at once, each naming the file, the
//! table and the column. Checks that need the data (files exist, columns exist,
//! types) live in the node, which owns the data.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::dp::{DpRule, PrivacySection};
use crate::template::{is_hash, Template};
use crate::RESERVED_PREFIX;

/// What a member may do in a collaboration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ability {
    /// May submit analyses.
    Query,
    /// May receive results.
    Receive,
    /// Contributes data (owns configured tables).
    Provide,
}

/// File format of a dataset read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
    /// Newline-delimited JSON.
    Json,
}

/// Scalar functions Airlock allows anywhere a dimension expression is (the
/// guard's allowlist); a rule's `scalar_functions` may narrow it.
pub const SCALAR_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "substr",
    "substring",
    "left",
    "right",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "concat",
    "concat_ws",
    "coalesce",
    "nullif",
    "starts_with",
    "ends_with",
    "strpos",
    "replace",
    "initcap",
    "abs",
    "round",
    "floor",
    "ceil",
    "date_trunc",
    "date_part",
    "greatest",
    "least",
];

/// Aggregate functions a rule may allow on a measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFunction {
    /// `COUNT(col)`.
    Count,
    /// `COUNT(DISTINCT col)`.
    CountDistinct,
    /// `SUM(col)`.
    Sum,
    /// `AVG(col)`.
    Avg,
}

impl AggFunction {
    /// SQL spelling.
    pub fn name(self) -> &'static str {
        match self {
            AggFunction::Count => "COUNT",
            AggFunction::CountDistinct => "COUNT DISTINCT",
            AggFunction::Sum => "SUM",
            AggFunction::Avg => "AVG",
        }
    }
}

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

/// The analysis rule of one configured table, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AnalysisRule {
    /// The aggregation rule.
    Aggregation {
        /// Minimum distinct identities per output row (k).
        min_distinct_identities: u64,
        /// Every query reading this table must join it with another member's table.
        #[serde(default)]
        join_required: bool,
        /// Differential privacy: noisy aggregates, bounded contributions,
        /// and a budget every query reading this table spends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        differential_privacy: Option<DpRule>,
        /// Scalar functions queries reading this table may use (a subset of
        /// [`SCALAR_FUNCTIONS`]); absent: all of them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scalar_functions: Option<Vec<String>>,
    },
    /// The list rule.
    List {
        /// Dimension columns that may be listed, by the owner only.
        list_columns: Vec<String>,
    },
    /// The custom rule: every limit of the aggregation rule, and in
    /// addition only analysis templates every owner approved
    /// (`templates_only`), only the named `analysts`, or both.
    Custom {
        /// Minimum distinct identities per output row (k).
        min_distinct_identities: u64,
        /// Every query reading this table must join it with another member's table.
        #[serde(default)]
        join_required: bool,
        /// Differential privacy, as for the aggregation rule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        differential_privacy: Option<DpRule>,
        /// Scalar functions allowed, as for the aggregation rule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scalar_functions: Option<Vec<String>>,
        /// Only runs of approved analysis templates may read the table.
        #[serde(default)]
        templates_only: bool,
        /// Only these members may query the table (empty: any analyst).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        analysts: Vec<String>,
    },
}

impl AnalysisRule {
    /// Which kind of rule this is.
    pub fn kind(&self) -> RuleKind {
        match self {
            AnalysisRule::Aggregation { .. } => RuleKind::Aggregation,
            AnalysisRule::List { .. } => RuleKind::List,
            AnalysisRule::Custom { .. } => RuleKind::Custom,
        }
    }

    /// Whether a query by `querier`, a template run or not, may read a
    /// table under this rule: `Err` says why not.
    pub fn admits(&self, querier: &str, template: bool) -> Result<(), &'static str> {
        if let AnalysisRule::Custom {
            templates_only,
            analysts,
            ..
        } = self
        {
            if *templates_only && !template {
                return Err("this table may only be read by an analysis template every owner of the tables it reads has approved");
            }
            if !analysts.is_empty() && !analysts.iter().any(|a| a == querier) {
                return Err("this table may only be queried by the analysts its rule names");
            }
        }
        Ok(())
    }

    /// The scalar functions the rule allows, if it narrows Airlock's list.
    pub fn scalar_functions(&self) -> Option<&[String]> {
        match self {
            AnalysisRule::Aggregation {
                scalar_functions, ..
            }
            | AnalysisRule::Custom {
                scalar_functions, ..
            } => scalar_functions.as_deref(),
            AnalysisRule::List { .. } => None,
        }
    }

    /// Whether every query reading the table must join another member's table.
    pub fn join_required(&self) -> bool {
        match self {
            AnalysisRule::Aggregation { join_required, .. }
            | AnalysisRule::Custom { join_required, .. } => *join_required,
            AnalysisRule::List { .. } => false,
        }
    }
}

/// The collaboration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollaborationSection {
    /// Name, also the default id.
    pub name: String,
    /// Stable id used as the salt of pseudonym keys; defaults to the name.
    #[serde(default)]
    pub id: Option<String>,
    /// File holding the collaboration secret (64 hex characters), relative to
    /// this file. Read only by the nodes of contributing members.
    pub secret_file: String,
    /// What the collaboration's analyses are for (e.g. `measurement`). Every
    /// dataset's consent source for each of them is applied by its node.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// Released results are deleted this many days after their release
    /// (default 30).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// `executor` (default): a trusted executor joins pseudonymised rows.
    /// `crypto`: two members compute overlaps and sums by private set
    /// intersection between their nodes, with no executor.
    #[serde(default)]
    pub mode: Mode,
}

/// How a collaboration computes joins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A trusted, ephemeral executor joins pseudonymised rows.
    #[default]
    Executor,
    /// Private set intersection between two nodes; no executor.
    Crypto,
}

impl CollaborationSection {
    /// The retention period in milliseconds.
    pub fn retention_ms(&self) -> i64 {
        i64::from(self.retention_days.unwrap_or(30)) * 86_400_000
    }
}

/// Where a dataset's consent for one purpose comes from. Exactly one of
/// `column` and `suppression_dataset` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentSource {
    /// A boolean column of the dataset: only rows where it is true count.
    #[serde(default)]
    pub column: Option<String>,
    /// A dataset of the same owner listing people who opted out (or were
    /// erased): their rows never count.
    #[serde(default)]
    pub suppression_dataset: Option<String>,
    /// The suppression dataset's identity column (default: `email`).
    #[serde(default)]
    pub suppression_column: Option<String>,
}

impl ConsentSource {
    /// The suppression dataset's identity column.
    pub fn suppression_column(&self) -> &str {
        self.suppression_column.as_deref().unwrap_or("email")
    }
}

/// A member as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Member name.
    pub name: String,
    /// Abilities in this collaboration.
    #[serde(default)]
    pub abilities: Vec<Ability>,
}

/// A dataset as written: a table a member registers on its node, read in place.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Dataset name.
    pub name: String,
    /// Owning member.
    pub owner: String,
    /// File, directory or glob, relative to the configuration file.
    pub path: String,
    /// File format.
    pub format: DatasetFormat,
    /// Consent source per purpose, applied by the owner's node before
    /// anything leaves it. A purpose with no source is consented by the
    /// owner for all its rows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consent: BTreeMap<String, ConsentSource>,
}

/// A configured table as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredTable {
    /// The alias analysts query.
    pub alias: String,
    /// The dataset it reads.
    pub dataset: String,
    /// The privacy unit (e.g. email). Never output.
    pub identity: String,
    /// Columns that may be joined on with `=`. Never output, never filtered.
    #[serde(default)]
    pub join: Vec<String>,
    /// Join contract per join column; a column's contract defaults to its name.
    /// Columns join only with columns of the same contract.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contracts: BTreeMap<String, String>,
    /// Columns that may be grouped, filtered and output.
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// Columns that may be aggregated, with the functions allowed on each.
    #[serde(default)]
    pub measures: BTreeMap<String, Vec<AggFunction>>,
    /// The dataset's own name of a configured column, where it differs
    /// (`email = "EMAIL_ADDR"`): the node reads it under the configured name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_columns: BTreeMap<String, String>,
    /// The analysis rule.
    pub rule: AnalysisRule,
}

/// The role of a column in a configured table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRole {
    /// The privacy unit; may also be a join column (then `join` is true).
    Identity {
        /// Also a join column.
        join: bool,
    },
    /// A join column.
    Join,
    /// A dimension.
    Dimension,
    /// A measure with its allowed functions.
    Measure(BTreeSet<AggFunction>),
}

impl ConfiguredTable {
    /// The role of a column, or `None` if the column is not configured.
    pub fn role(&self, column: &str) -> Option<ColumnRole> {
        if column == self.identity {
            Some(ColumnRole::Identity {
                join: self.join.iter().any(|j| j == column),
            })
        } else if self.join.iter().any(|j| j == column) {
            Some(ColumnRole::Join)
        } else if self.dimensions.iter().any(|d| d == column) {
            Some(ColumnRole::Dimension)
        } else {
            self.measures
                .get(column)
                .map(|f| ColumnRole::Measure(f.iter().copied().collect()))
        }
    }

    /// The join contract of an identity or join column.
    pub fn contract(&self, column: &str) -> String {
        if let Some(c) = self.contracts.get(column) {
            return c.clone();
        }
        if column == self.identity && !self.join.iter().any(|j| j == column) {
            return format!("identity:{}", self.alias);
        }
        column.to_string()
    }

    /// The dataset's name of a configured column.
    pub fn source_of<'a>(&'a self, column: &'a str) -> &'a str {
        self.source_columns
            .get(column)
            .map(String::as_str)
            .unwrap_or(column)
    }

    /// Every configured column, identity first, without duplicates.
    pub fn columns(&self) -> Vec<String> {
        let mut out = vec![self.identity.clone()];
        for c in self
            .join
            .iter()
            .chain(self.dimensions.iter())
            .chain(self.measures.keys())
        {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }

    /// Minimum distinct identities per output row, for aggregation rules.
    pub fn min_distinct_identities(&self) -> Option<u64> {
        match &self.rule {
            AnalysisRule::Aggregation {
                min_distinct_identities,
                ..
            }
            | AnalysisRule::Custom {
                min_distinct_identities,
                ..
            } => Some(*min_distinct_identities),
            AnalysisRule::List { .. } => None,
        }
    }

    /// The DP option of the table's rule, if it has one.
    pub fn dp(&self) -> Option<&DpRule> {
        match &self.rule {
            AnalysisRule::Aggregation {
                differential_privacy,
                ..
            }
            | AnalysisRule::Custom {
                differential_privacy,
                ..
            } => differential_privacy.as_ref(),
            AnalysisRule::List { .. } => None,
        }
    }
}

/// The type of a canonical column of the schema contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CanonicalType {
    /// Text.
    String,
    /// Integer.
    Int,
    /// Floating point.
    Float,
    /// Date.
    Date,
    /// Boolean.
    Bool,
}

/// A normalisation step, applied by each node in order, before anything is
/// compared, grouped or pseudonymised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Remove leading and trailing whitespace.
    Trim,
    /// Lower-case.
    Lowercase,
    /// Upper-case.
    Uppercase,
    /// A phone number in E.164 (`+` and 8 to 15 digits): spaces, dashes,
    /// dots and parentheses removed, a leading `00` read as `+`; a number
    /// without a country code becomes NULL (it cannot match).
    E164,
}

/// A canonical join key or dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalColumn {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: CanonicalType,
    /// Normalisation steps (strings only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normalize: Vec<Normalize>,
}

/// The collaboration's schema contract: canonical join keys and dimension
/// names that every member maps its own columns to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSection {
    /// Canonical join keys (e.g. `email`, `phone`). When any is declared,
    /// every join column must be one of them.
    #[serde(default)]
    pub keys: BTreeMap<String, CanonicalColumn>,
    /// Canonical dimension names.
    #[serde(default)]
    pub dimensions: BTreeMap<String, CanonicalColumn>,
}

/// The whole file as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollaborationConfig {
    /// The collaboration section.
    pub collaboration: CollaborationSection,
    /// Members.
    #[serde(default)]
    pub members: Vec<Member>,
    /// Datasets, read in place.
    #[serde(default)]
    pub datasets: Vec<Dataset>,
    /// Configured tables.
    #[serde(default)]
    pub tables: Vec<ConfiguredTable>,
    /// The privacy budget, required when a table uses differential privacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySection>,
    /// The schema contract: canonical keys and dimensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaSection>,
    /// Analysis templates, each pinned by its content hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
    /// Template hashes each member approves. A member's entry is its own:
    /// only that member may change it. An approval whose hash no template
    /// has any more (its text changed) approves nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approvals: BTreeMap<String, Vec<String>>,
}

/// One problem in a configuration, located by file, table and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (as given by the caller).
    pub file: String,
    /// The configured table, dataset or member concerned (what `kind` says).
    pub table: Option<String>,
    /// What `table` names: `table`, `dataset` or `member`.
    pub kind: &'static str,
    /// The column concerned.
    pub column: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(t) = &self.table {
            write!(f, ": {} '{t}'", self.kind)?;
        }
        if let Some(c) = &self.column {
            write!(f, ", column '{c}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated collaboration.
#[derive(Debug, Clone)]
pub struct Collaboration {
    /// The validated configuration.
    pub config: CollaborationConfig,
    /// The file it came from (for messages).
    pub file: String,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

struct Problems<'a> {
    file: &'a str,
    list: Vec<ConfigError>,
}

impl Problems<'_> {
    fn add(&mut self, table: Option<&str>, column: Option<&str>, message: impl Into<String>) {
        self.add_about("table", table, column, message);
    }

    fn add_about(
        &mut self,
        kind: &'static str,
        name: Option<&str>,
        column: Option<&str>,
        message: impl Into<String>,
    ) {
        self.list.push(ConfigError {
            file: self.file.to_string(),
            table: name.map(str::to_string),
            kind,
            column: column.map(str::to_string),
            message: message.into(),
        });
    }
}

impl Collaboration {
    /// Parses and validates a configuration. `file` names it in messages.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, ConfigErrors> {
        let config: CollaborationConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.to_string(),
                table: None,
                kind: "table",
                column: None,
                message: format!("not a valid collaboration file: {}", e.message()),
            }])
        })?;
        Self::validate(config, file)
    }

    /// Validates a parsed configuration.
    pub fn validate(config: CollaborationConfig, file: &str) -> Result<Self, ConfigErrors> {
        let mut p = Problems {
            file,
            list: Vec::new(),
        };
        let c = &config;
        if !is_identifier(&c.collaboration.name.replace('-', "_")) {
            p.add(
                None,
                None,
                "collaboration name must be lowercase letters, digits, '_' or '-'",
            );
        }
        if c.collaboration.secret_file.trim().is_empty() {
            p.add(None, None, "collaboration.secret_file is empty");
        }
        if c.members.is_empty() {
            p.add(None, None, "no members declared");
        }
        let mut members = BTreeMap::new();
        for m in &c.members {
            if m.name.trim().is_empty() {
                p.add(None, None, "a member has an empty name");
            }
            if members.insert(m.name.as_str(), m).is_some() {
                p.add_about("member", Some(&m.name), None, "member declared twice");
            }
            if m.abilities.is_empty() {
                p.add_about("member", Some(&m.name), None, "member has no abilities");
            }
        }
        if !c
            .members
            .iter()
            .any(|m| m.abilities.contains(&Ability::Query))
        {
            p.add(None, None, "no member has the 'query' ability");
        }
        let mut datasets = BTreeMap::new();
        for d in &c.datasets {
            if datasets.insert(d.name.as_str(), d).is_some() {
                p.add_about("dataset", Some(&d.name), None, "dataset declared twice");
            }
            match members.get(d.owner.as_str()) {
                None => p.add_about(
                    "dataset",
                    Some(&d.name),
                    None,
                    format!("dataset owner '{}' is not a declared member", d.owner),
                ),
                Some(m) if !m.abilities.contains(&Ability::Provide) => p.add_about(
                    "dataset",
                    Some(&d.name),
                    None,
                    format!("dataset owner '{}' lacks the 'provide' ability", d.owner),
                ),
                Some(_) => {}
            }
            if d.path.trim().is_empty() {
                p.add_about("dataset", Some(&d.name), None, "dataset path is empty");
            }
        }
        if c.collaboration
            .retention_days
            .is_some_and(|d| d == 0 || d > 3650)
        {
            p.add(
                None,
                None,
                "collaboration.retention_days must be between 1 and 3650",
            );
        }
        let mut purposes = BTreeSet::new();
        for purpose in &c.collaboration.purposes {
            if !is_identifier(purpose) {
                p.add(
                    None,
                    None,
                    format!("purpose '{purpose}' must be a lowercase identifier"),
                );
            }
            if !purposes.insert(purpose.as_str()) {
                p.add(None, None, format!("purpose '{purpose}' declared twice"));
            }
        }
        for d in &c.datasets {
            for (purpose, source) in &d.consent {
                if !purposes.contains(purpose.as_str()) {
                    p.add_about(
                        "dataset",
                        Some(&d.name),
                        None,
                        format!("consent is given for purpose '{purpose}', which the collaboration does not declare"),
                    );
                }
                match (&source.column, &source.suppression_dataset) {
                    (Some(col), None) if !col.trim().is_empty() => {}
                    (None, Some(list)) => match datasets.get(list.as_str()) {
                        Some(l) if l.owner == d.owner && l.name != d.name => {}
                        _ => p.add_about(
                            "dataset",
                            Some(&d.name),
                            None,
                            format!("consent for '{purpose}': suppression_dataset '{list}' is not another dataset of the same owner"),
                        ),
                    },
                    _ => p.add_about(
                        "dataset",
                        Some(&d.name),
                        None,
                        format!("consent for '{purpose}' needs exactly one of column or suppression_dataset"),
                    ),
                }
            }
        }
        let mut aliases = BTreeSet::new();
        for t in &c.tables {
            let a = t.alias.as_str();
            if !is_identifier(a) {
                p.add(
                    Some(a),
                    None,
                    "alias must be a lowercase SQL identifier ([a-z_][a-z0-9_]*)",
                );
            }
            if a.starts_with(RESERVED_PREFIX) {
                p.add(Some(a), None, "alias uses the reserved prefix __airlock");
            }
            if !aliases.insert(a) {
                p.add(Some(a), None, "alias declared twice");
            }
            if !datasets.contains_key(t.dataset.as_str()) {
                p.add(
                    Some(a),
                    None,
                    format!("dataset '{}' is not declared", t.dataset),
                );
            }
            validate_roles(t, &mut p);
            if let Some(dp) = t.dp() {
                for (column, message) in dp.problems(&t.measures, &t.dimensions) {
                    p.add(Some(a), column.as_deref(), message);
                }
                if c.privacy.is_none() {
                    p.add(
                        Some(a),
                        None,
                        "the rule uses differential_privacy but the collaboration has no [privacy] budget",
                    );
                }
            }
        }
        let analysts: BTreeSet<&str> = c
            .members
            .iter()
            .filter(|m| m.abilities.contains(&Ability::Query))
            .map(|m| m.name.as_str())
            .collect();
        for t in &c.tables {
            if let AnalysisRule::Custom {
                analysts: named, ..
            } = &t.rule
            {
                for a in named {
                    if !analysts.contains(a.as_str()) {
                        p.add(
                            Some(&t.alias),
                            None,
                            format!("custom rule: analyst '{a}' is not a member with the 'query' ability"),
                        );
                    }
                }
            }
        }
        if let Some(schema) = &c.schema {
            for (name, col) in schema.keys.iter().chain(&schema.dimensions) {
                if !is_identifier(name) {
                    p.add(
                        None,
                        None,
                        format!("schema: '{name}' must be a lowercase identifier"),
                    );
                }
                if !col.normalize.is_empty() && col.kind != CanonicalType::String {
                    p.add(
                        None,
                        None,
                        format!("schema: '{name}': normalize applies to strings only"),
                    );
                }
            }
            if let Some(both) = schema
                .keys
                .keys()
                .find(|k| schema.dimensions.contains_key(*k))
            {
                p.add(
                    None,
                    None,
                    format!("schema: '{both}' is declared as both a key and a dimension"),
                );
            }
            for t in &c.tables {
                for j in &t.join {
                    if !schema.keys.is_empty() && !schema.keys.contains_key(j) {
                        p.add(
                            Some(&t.alias),
                            Some(j),
                            "a join column must be one of the schema's keys ([schema.keys])",
                        );
                    }
                }
                for d in &t.dimensions {
                    if schema.keys.contains_key(d) {
                        p.add(
                            Some(&t.alias),
                            Some(d),
                            "a schema key cannot be a dimension",
                        );
                    }
                }
            }
        }
        for t in &c.tables {
            let configured = t.columns();
            let mut sources = BTreeSet::new();
            for (col, src) in &t.source_columns {
                if !configured.contains(col) {
                    p.add(
                        Some(&t.alias),
                        Some(col),
                        "source_columns names a column the table does not configure",
                    );
                }
                if src.trim().is_empty() {
                    p.add(
                        Some(&t.alias),
                        Some(col),
                        "source_columns gives an empty dataset column",
                    );
                }
                if !sources.insert(src.as_str()) {
                    p.add(
                        Some(&t.alias),
                        Some(col),
                        "source_columns maps two columns to the same dataset column",
                    );
                }
            }
        }
        if c.collaboration.mode == Mode::Crypto {
            let providers = c
                .members
                .iter()
                .filter(|m| m.abilities.contains(&Ability::Provide))
                .count();
            if providers != 2 {
                p.add(
                    None,
                    None,
                    format!("crypto mode is for a pair of members: exactly two must have the 'provide' ability ({providers} do)"),
                );
            }
            for t in &c.tables {
                if matches!(t.rule, AnalysisRule::List { .. }) {
                    p.add(
                        Some(&t.alias),
                        None,
                        "crypto mode releases aggregates only: a list rule cannot be used",
                    );
                }
                if let Some(dp) = t.dp() {
                    if dp.bounds.values().any(|[lo, _]| *lo < 0) {
                        p.add(
                            Some(&t.alias),
                            None,
                            "crypto mode sums non-negative values: differential_privacy bounds must start at 0 or above",
                        );
                    }
                }
            }
        }
        let mut names = BTreeSet::new();
        for t in &c.templates {
            if !names.insert(t.name.as_str()) {
                p.add(None, None, format!("template '{}' declared twice", t.name));
            }
            for message in t.problems(&purposes, &analysts) {
                p.add(None, None, format!("template '{}': {message}", t.name));
            }
        }
        for (member, hashes) in &c.approvals {
            if !members.contains_key(member.as_str()) {
                p.add(
                    None,
                    None,
                    format!("approvals are given for '{member}', who is not a member"),
                );
            }
            let mut seen = BTreeSet::new();
            for h in hashes {
                if !is_hash(h) {
                    p.add(
                        None,
                        None,
                        format!("approvals of '{member}': an approval must be a template hash of 64 lowercase hex characters"),
                    );
                } else if !seen.insert(h.as_str()) {
                    p.add(
                        None,
                        None,
                        format!("approvals of '{member}': a template hash is listed twice"),
                    );
                }
            }
        }
        if let Some(privacy) = &c.privacy {
            let names: Vec<String> = c.members.iter().map(|m| m.name.clone()).collect();
            for message in privacy.problems(&names) {
                p.add(None, None, message);
            }
        }
        // Columns joined under one contract must agree on nothing more than the
        // contract name; types are checked by the node against the data.
        if p.list.is_empty() {
            Ok(Collaboration {
                config,
                file: file.to_string(),
            })
        } else {
            Err(ConfigErrors(p.list))
        }
    }

    /// Collaboration name.
    pub fn name(&self) -> &str {
        &self.config.collaboration.name
    }

    /// Collaboration id (salt of pseudonym keys).
    pub fn id(&self) -> &str {
        self.config
            .collaboration
            .id
            .as_deref()
            .unwrap_or(&self.config.collaboration.name)
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.config.members.iter().find(|m| m.name == name)
    }

    /// Whether a member has an ability.
    pub fn has_ability(&self, member: &str, ability: Ability) -> bool {
        self.member(member)
            .is_some_and(|m| m.abilities.contains(&ability))
    }

    /// A dataset by name.
    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.config.datasets.iter().find(|d| d.name == name)
    }

    /// A configured table by alias.
    pub fn table(&self, alias: &str) -> Option<&ConfiguredTable> {
        self.config.tables.iter().find(|t| t.alias == alias)
    }

    /// The owner of a configured table.
    pub fn owner_of(&self, alias: &str) -> Option<&str> {
        let t = self.table(alias)?;
        self.dataset(&t.dataset).map(|d| d.owner.as_str())
    }

    /// Members with the `provide` ability (those that run a node), in file
    /// order.
    pub fn providers(&self) -> Vec<String> {
        self.config
            .members
            .iter()
            .filter(|m| m.abilities.contains(&Ability::Provide))
            .map(|m| m.name.clone())
            .collect()
    }

    /// The members whose own approval every version needs before their
    /// nodes install it (ATTACKS 30): each member that contributes data
    /// (the `provide` ability) or owns a dataset in the file. The hub waits
    /// for these approvals and every node checks its own member's; both ask
    /// this function.
    pub fn approvers(&self) -> Vec<String> {
        let mut out = self.providers();
        for d in &self.config.datasets {
            if !out.contains(&d.owner) {
                out.push(d.owner.clone());
            }
        }
        out
    }

    /// What belongs to `member` in this collaboration, in a comparable
    /// form: the datasets it owns and the configured tables over them.
    pub fn part_of(&self, member: &str) -> serde_json::Value {
        let datasets: Vec<&Dataset> = self
            .config
            .datasets
            .iter()
            .filter(|d| d.owner == member)
            .collect();
        serde_json::json!({
            "datasets": datasets,
            "tables": self.tables_of(member),
            "approvals": self.config.approvals.get(member).filter(|a| !a.is_empty()),
        })
    }

    /// What a new version `next` changes that `member` may not change on
    /// its own: another member's datasets or tables, the member list and
    /// abilities, or the collaboration's identity. Empty if none.
    pub fn changes_beyond(&self, next: &Collaboration, member: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.id() != next.id() || self.name() != next.name() {
            out.push("the collaboration's name or id".to_string());
        }
        let members = |c: &Collaboration| serde_json::to_value(&c.config.members).ok();
        if members(self) != members(next) {
            out.push("the members and their abilities".to_string());
        }
        // The budget belongs to no single member: raising it would let an
        // analyst buy more releases on everyone's data.
        if self.config.privacy != next.config.privacy {
            out.push("the privacy budget".to_string());
        }
        if self.config.schema != next.config.schema {
            out.push("the schema contract".to_string());
        }
        if self.config.collaboration.mode != next.config.collaboration.mode {
            out.push("the mode".to_string());
        }
        if self.config.collaboration.purposes != next.config.collaboration.purposes {
            out.push("the purposes".to_string());
        }
        if self.config.collaboration.retention_days != next.config.collaboration.retention_days {
            out.push("the retention period".to_string());
        }
        let mut owners: Vec<&str> = self
            .config
            .datasets
            .iter()
            .chain(&next.config.datasets)
            .map(|d| d.owner.as_str())
            .chain(self.config.approvals.keys().map(String::as_str))
            .chain(next.config.approvals.keys().map(String::as_str))
            .collect();
        owners.sort_unstable();
        owners.dedup();
        for o in owners {
            if o != member && self.part_of(o) != next.part_of(o) {
                out.push(format!("the datasets, tables and approvals of '{o}'"));
            }
        }
        out
    }

    /// A template by name, or by its hash (or a prefix of at least 8 hex
    /// characters of it).
    pub fn template(&self, name_or_hash: &str) -> Option<&Template> {
        let t = &self.config.templates;
        if let Some(found) = t.iter().find(|t| t.name == name_or_hash) {
            return Some(found);
        }
        if name_or_hash.len() < 8 {
            return None;
        }
        let mut by_hash = t.iter().filter(|t| t.hash().starts_with(name_or_hash));
        match (by_hash.next(), by_hash.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// The schema contract's declaration of a canonical column name.
    pub fn canonical(&self, name: &str) -> Option<&CanonicalColumn> {
        let s = self.config.schema.as_ref()?;
        s.keys.get(name).or_else(|| s.dimensions.get(name))
    }

    /// Whether `member` approves the template with `hash`.
    pub fn approves(&self, member: &str, hash: &str) -> bool {
        self.config
            .approvals
            .get(member)
            .is_some_and(|a| a.iter().any(|h| h == hash))
    }

    /// Of `owners`, those who have not approved the template with `hash`.
    pub fn missing_approvals<'a>(&self, owners: &[&'a str], hash: &str) -> Vec<&'a str> {
        let mut out: Vec<&str> = owners
            .iter()
            .copied()
            .filter(|o| !self.approves(o, hash))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Configured tables owned by a member.
    pub fn tables_of(&self, member: &str) -> Vec<&ConfiguredTable> {
        self.config
            .tables
            .iter()
            .filter(|t| self.owner_of(&t.alias) == Some(member))
            .collect()
    }
}

fn validate_roles(t: &ConfiguredTable, p: &mut Problems<'_>) {
    let a = t.alias.as_str();
    let mut all: Vec<&str> = vec![t.identity.as_str()];
    all.extend(t.join.iter().map(String::as_str));
    all.extend(t.dimensions.iter().map(String::as_str));
    all.extend(t.measures.keys().map(String::as_str));
    for col in &all {
        if col.starts_with(RESERVED_PREFIX) {
            p.add(
                Some(a),
                Some(col),
                "column uses the reserved prefix __airlock",
            );
        } else if col.trim().is_empty() {
            p.add(Some(a), None, "empty column name");
        }
    }
    let is_join = |c: &str| t.join.iter().any(|j| j == c);
    let is_dim = |c: &str| t.dimensions.iter().any(|d| d == c);
    let is_identity = |c: &str| t.identity == c;
    for d in &t.dimensions {
        if is_identity(d) {
            p.add(
                Some(a),
                Some(d),
                "conflicting roles: a column cannot be both identity and dimension",
            );
        }
        if is_join(d) {
            p.add(
                Some(a),
                Some(d),
                "conflicting roles: a column cannot be both join and dimension",
            );
        }
    }
    for (m, funcs) in &t.measures {
        if is_identity(m) || is_join(m) || is_dim(m) {
            p.add(
                Some(a),
                Some(m),
                "conflicting roles: a measure cannot also be identity, join or dimension",
            );
        }
        if funcs.is_empty() {
            p.add(Some(a), Some(m), "measure allows no aggregate function");
        }
    }
    let mut seen = BTreeSet::new();
    for c in t.join.iter().chain(t.dimensions.iter()) {
        if !seen.insert(c.as_str()) {
            p.add(Some(a), Some(c), "column listed twice");
        }
    }
    for col in t.contracts.keys() {
        if !is_join(col) {
            p.add(
                Some(a),
                Some(col),
                "a join contract is given for a column that is not a join column",
            );
        }
    }
    if let Some(fs) = t.rule.scalar_functions() {
        for f in fs {
            if !SCALAR_FUNCTIONS.contains(&f.as_str()) {
                p.add(
                    Some(a),
                    None,
                    format!("scalar_functions: '{}' is not a function Airlock allows (lowercase names from docs/config.md)", f.chars().take(40).collect::<String>()),
                );
            }
        }
    }
    match &t.rule {
        AnalysisRule::Custom {
            min_distinct_identities,
            templates_only,
            analysts,
            ..
        } => {
            if *min_distinct_identities < 2 {
                p.add(
                    Some(a),
                    None,
                    format!(
                        "min_distinct_identities must be at least 2 (got {min_distinct_identities})"
                    ),
                );
            }
            if !templates_only && analysts.is_empty() {
                p.add(
                    Some(a),
                    None,
                    "custom rule must set templates_only, name its analysts, or both",
                );
            }
        }
        AnalysisRule::Aggregation {
            min_distinct_identities,
            ..
        } => {
            if *min_distinct_identities < 2 {
                p.add(
                    Some(a),
                    None,
                    format!(
                        "min_distinct_identities must be at least 2 (got {min_distinct_identities})"
                    ),
                );
            }
        }
        AnalysisRule::List { list_columns } => {
            if list_columns.is_empty() {
                p.add(Some(a), None, "list rule has no list_columns");
            }
            if t.join.is_empty() {
                p.add(Some(a), None, "list rule needs at least one join column");
            }
            for c in list_columns {
                if !is_dim(c) {
                    p.add(
                        Some(a),
                        Some(c),
                        "list column must be a dimension column of the table",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[collaboration]
name = "demo"
secret_file = "collaboration.key"

[[members]]
name = "publisher"
abilities = ["provide"]

[[members]]
name = "advertiser"
abilities = ["query", "receive", "provide"]

[[datasets]]
name = "audience_ds"
owner = "publisher"
path = "audience.parquet"
format = "parquet"

[[tables]]
alias = "audience"
dataset = "audience_ds"
identity = "email"
join = ["email"]
dimensions = ["segment", "region"]
rule = { type = "aggregation", min_distinct_identities = 50 }
"#;

    fn errors(text: &str) -> Vec<String> {
        match Collaboration::from_toml(text, "c.toml") {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn good_config_loads() {
        let c = Collaboration::from_toml(GOOD, "c.toml").expect("valid");
        assert_eq!(c.owner_of("audience"), Some("publisher"));
        assert_eq!(
            c.table("audience").map(|t| t.contract("email")),
            Some("email".into())
        );
        assert!(c.has_ability("advertiser", Ability::Query));
        assert!(!c.has_ability("publisher", Ability::Query));
    }

    #[test]
    fn bad_inputs_are_named() {
        let cases = [
            (GOOD.replace("min_distinct_identities = 50", "min_distinct_identities = 1"),
             "c.toml: table 'audience': min_distinct_identities must be at least 2 (got 1)"),
            (GOOD.replace("[\"segment\", \"region\"]", "[\"segment\", \"email\"]"),
             "c.toml: table 'audience', column 'email': conflicting roles: a column cannot be both identity and dimension"),
            (GOOD.replace("owner = \"publisher\"", "owner = \"nobody\""),
             "c.toml: dataset 'audience_ds': dataset owner 'nobody' is not a declared member"),
            (GOOD.replace("dataset = \"audience_ds\"", "dataset = \"missing\""),
             "c.toml: table 'audience': dataset 'missing' is not declared"),
            (GOOD.replace("alias = \"audience\"", "alias = \"Audience\""),
             "c.toml: table 'Audience': alias must be a lowercase SQL identifier ([a-z_][a-z0-9_]*)"),
            (GOOD.replace("abilities = [\"provide\"]", "abilities = [\"query\"]"),
             "c.toml: dataset 'audience_ds': dataset owner 'publisher' lacks the 'provide' ability"),
            (GOOD.replace("join = [\"email\"]", "join = [\"email\", \"segment\"]"),
             "c.toml: table 'audience', column 'segment': conflicting roles: a column cannot be both join and dimension"),
        ];
        for (text, want) in cases {
            let got = errors(&text);
            assert!(got.iter().any(|g| g == want), "want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn bad_differential_privacy_settings_are_named() {
        let dp = |rule: &str, privacy: &str| {
            let text = GOOD
                .replace(
                    "dimensions = [\"segment\", \"region\"]",
                    "dimensions = [\"segment\", \"region\"]\nmeasures = { spend = [\"sum\"] }",
                )
                .replace(
                    "min_distinct_identities = 50 }",
                    &format!(
                        "min_distinct_identities = 50, differential_privacy = {{ {rule} }} }}"
                    ),
                )
                .replace(
                    "[[members]]\nname = \"publisher\"",
                    &format!("{privacy}\n[[members]]\nname = \"publisher\""),
                );
            errors(&text)
        };
        let ok_rule = "epsilon = 1.0, bounds = { spend = [0, 100] }";
        let budget = "[privacy]\nepsilon = 3.0\n";
        assert!(dp(ok_rule, budget).is_empty(), "{:?}", dp(ok_rule, budget));
        let cases = [
            ("epsilon = 0.0, bounds = { spend = [0, 100] }", budget,
             "c.toml: table 'audience': differential_privacy.epsilon must be above 0 and at most 100"),
            ("epsilon = 1.0, users_noise_per_query = 10.0, bounds = { spend = [0, 100] }", budget,
             "c.toml: table 'audience': differential_privacy: give either epsilon or users_noise_per_query, not both"),
            ("bounds = { spend = [0, 100] }", budget,
             "c.toml: table 'audience': differential_privacy: epsilon (or users_noise_per_query) is required"),
            ("epsilon = 1.0", budget,
             "c.toml: table 'audience', column 'spend': differential_privacy: a measure that may be summed or averaged needs bounds = [low, high]"),
            ("epsilon = 1.0, bounds = { spend = [100, 0] }", budget,
             "c.toml: table 'audience', column 'spend': differential_privacy.bounds: low is above high"),
            ("epsilon = 1.0, bounds = { spend = [0, 100], segment = [0, 1] }", budget,
             "c.toml: table 'audience', column 'segment': differential_privacy.bounds names a column that is not a measure"),
            ("epsilon = 1.0, bounds = { spend = [0, 100] }, public_keys = { spend = [\"a\"] }", budget,
             "c.toml: table 'audience', column 'spend': differential_privacy.public_keys names a column that is not a dimension"),
            ("epsilon = 1.0, bounds = { spend = [0, 100] }, public_keys = { segment = [] }", budget,
             "c.toml: table 'audience', column 'segment': differential_privacy.public_keys must list between 1 and 10000 keys"),
            ("epsilon = 1.0, delta = 0.5, bounds = { spend = [0, 100] }", budget,
             "c.toml: table 'audience': differential_privacy.delta must be at least 0 and below 0.01"),
            ("epsilon = 1.0, max_rows_per_identity = 0, bounds = { spend = [0, 100] }", budget,
             "c.toml: table 'audience': differential_privacy.max_rows_per_identity must be between 1 and 1000000"),
            ("epsilon = 1.0, bounds = { spend = [0, 100] }, public_keys = { segment = [\"a\", \"b\", \"a\"] }", budget,
             "c.toml: table 'audience', column 'segment': differential_privacy.public_keys lists a key twice"),
            (ok_rule, "",
             "c.toml: table 'audience': the rule uses differential_privacy but the collaboration has no [privacy] budget"),
            (ok_rule, "[privacy]\nepsilon = -1.0\n",
             "c.toml: privacy.epsilon must be between 0 and 1000000"),
            (ok_rule, "[privacy]\nepsilon = 3.0\nrefresh_days = 0\n",
             "c.toml: privacy.refresh_days must be at least 1"),
            (ok_rule, "[privacy]\nepsilon = 3.0\nanalysts = [{ name = \"nobody\", epsilon = 1.0 }]\n",
             "c.toml: privacy.analysts: 'nobody' is not a declared member"),
        ];
        for (rule, privacy, want) in cases {
            let got = dp(rule, privacy);
            assert!(got.iter().any(|g| g == want), "want {want:?}, got {got:?}");
        }
        let got = dp("epsilon = 1.0, colour = 1", budget);
        assert!(got[0].contains("unknown field `colour`"), "{got:?}");
    }

    #[test]
    fn bad_consent_sources_are_named() {
        let with = |purposes: &str, consent: &str| {
            let text = GOOD
                .replace(
                    "secret_file = \"collaboration.key\"",
                    &format!("secret_file = \"collaboration.key\"\npurposes = {purposes}"),
                )
                .replace(
                    "format = \"parquet\"",
                    &format!("format = \"parquet\"\nconsent = {consent}"),
                );
            errors(&text)
        };
        assert!(with(
            "[\"measurement\"]",
            "{ measurement = { column = \"consent\" } }"
        )
        .is_empty());
        let cases = [
            ("[\"measurement\"]", "{ activation = { column = \"consent\" } }",
             "c.toml: dataset 'audience_ds': consent is given for purpose 'activation', which the collaboration does not declare"),
            ("[\"measurement\"]", "{ measurement = { column = \"consent\", suppression_dataset = \"x\" } }",
             "c.toml: dataset 'audience_ds': consent for 'measurement' needs exactly one of column or suppression_dataset"),
            ("[\"measurement\"]", "{ measurement = { suppression_dataset = \"audience_ds\" } }",
             "c.toml: dataset 'audience_ds': consent for 'measurement': suppression_dataset 'audience_ds' is not another dataset of the same owner"),
            ("[\"Measure ment\"]", "{}",
             "c.toml: purpose 'Measure ment' must be a lowercase identifier"),
            ("[\"m\", \"m\"]", "{}", "c.toml: purpose 'm' declared twice"),
            ("[]\nretention_days = 0", "{}",
             "c.toml: collaboration.retention_days must be between 1 and 3650"),
            ("[]\nretention_days = 5000", "{}",
             "c.toml: collaboration.retention_days must be between 1 and 3650"),
        ];
        for (purposes, consent, want) in cases {
            let got = with(purposes, consent);
            assert!(got.iter().any(|g| g == want), "want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn the_privacy_budget_belongs_to_no_single_member() {
        let with = |eps: &str| {
            let text = GOOD.replace(
                "[[members]]\nname = \"publisher\"",
                &format!("[privacy]\nepsilon = {eps}\n\n[[members]]\nname = \"publisher\""),
            );
            Collaboration::from_toml(&text, "c.toml").expect("valid")
        };
        let (small, large) = (with("1.0"), with("100.0"));
        assert_eq!(
            small.changes_beyond(&large, "advertiser"),
            vec!["the privacy budget".to_string()]
        );
        assert!(small.changes_beyond(&with("1.0"), "advertiser").is_empty());
    }

    #[test]
    fn custom_rules_templates_and_approvals_are_checked_by_name() {
        let custom = |rule: &str| {
            GOOD.replace(
                "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
                rule,
            )
        };
        let got = errors(&custom(
            "rule = { type = \"custom\", min_distinct_identities = 50 }",
        ));
        assert_eq!(
            got,
            vec!["c.toml: table 'audience': custom rule must set templates_only, name its analysts, or both"]
        );
        let got = errors(&custom(
            "rule = { type = \"custom\", min_distinct_identities = 1, analysts = [\"publisher\"] }",
        ));
        assert!(
            got.iter()
                .any(|g| g.contains("min_distinct_identities must be at least 2")),
            "{got:?}"
        );
        assert!(got.iter().any(|g| g.contains("analyst 'publisher' is not a member with the 'query' ability")), "{got:?}");
        let ok = custom(
            "rule = { type = \"custom\", min_distinct_identities = 50, templates_only = true }",
        );
        let c = Collaboration::from_toml(&ok, "c.toml").expect("valid");
        let rule = &c.table("audience").expect("table").rule;
        assert!(rule.admits("advertiser", true).is_ok());
        assert!(rule.admits("advertiser", false).is_err());
        assert_eq!(rule.kind(), RuleKind::Custom);

        // Templates: an undeclared purpose, a duplicate; approvals: a
        // stranger, a malformed hash, a hash twice.
        let h = "ab".repeat(32);
        let text = format!(
            "{ok}\n[[templates]]\nname = \"t\"\npurpose = \"resale\"\nsql = \"SELECT 1\"\n\n[[templates]]\nname = \"t\"\npurpose = \"resale\"\nsql = \"SELECT 2\"\n\n[approvals]\nstranger = []\npublisher = [\"XYZ\", \"{h}\", \"{h}\"]\n"
        );
        let got = errors(&text);
        for want in [
            "template 't' declared twice",
            "template 't': purpose 'resale' is not one of the collaboration's purposes",
            "approvals are given for 'stranger', who is not a member",
            "approvals of 'publisher': an approval must be a template hash",
            "approvals of 'publisher': a template hash is listed twice",
        ] {
            assert!(got.iter().any(|g| g.contains(want)), "{want}: {got:?}");
        }
        // A member's approvals are its own.
        let with = |approvals: &str| {
            Collaboration::from_toml(&format!("{ok}\n[approvals]\n{approvals}\n"), "c.toml")
                .expect("valid")
        };
        let (before, after) = (
            with("advertiser = []"),
            with(&format!("publisher = [\"{h}\"]")),
        );
        assert_eq!(
            before.changes_beyond(&after, "advertiser"),
            vec!["the datasets, tables and approvals of 'publisher'".to_string()]
        );
        assert!(before.changes_beyond(&after, "publisher").is_empty());
    }

    #[test]
    fn schema_contract_errors_are_named() {
        let text = GOOD.replace(
            "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
            "source_columns = { email = \"EMAIL\", segment = \"EMAIL\", colour = \"C\" }\nrule = { type = \"aggregation\", min_distinct_identities = 50 }",
        ) + "\n[schema.keys.phone]\ntype = \"int\"\nnormalize = [\"e164\"]\n\n[schema.keys.region]\ntype = \"string\"\n\n[schema.dimensions.region]\ntype = \"string\"\n";
        let got = errors(&text);
        for want in [
            "schema: 'phone': normalize applies to strings only",
            "schema: 'region' is declared as both a key and a dimension",
            "table 'audience', column 'email': a join column must be one of the schema's keys",
            "table 'audience', column 'region': a schema key cannot be a dimension",
            "table 'audience', column 'colour': source_columns names a column the table does not configure",
            "source_columns maps two columns to the same dataset column",
        ] {
            assert!(got.iter().any(|g| g.contains(want)), "{want}: {got:?}");
        }
        let unknown = errors(
            &(GOOD.to_string()
                + "\n[schema.keys.email]\ntype = \"string\"\nnormalize = [\"soundex\"]\n"),
        );
        assert!(
            unknown[0].contains("unknown variant `soundex`"),
            "{unknown:?}"
        );
    }

    #[test]
    fn syntax_and_unknown_fields_are_errors() {
        let got = errors("[collaboration\nname=");
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("c.toml: not a valid collaboration file"),
            "{got:?}"
        );
        let got = errors(&GOOD.replace("format = \"parquet\"", "format = \"parquet\"\ncolour = 1"));
        assert!(got[0].contains("unknown field `colour`"), "{got:?}");
        let got = errors(&GOOD.replace("format = \"parquet\"", "format = \"xlsx\""));
        assert!(got[0].contains("unknown variant `xlsx`"), "{got:?}");
    }

    #[test]
    fn measure_conflicts_and_list_rules() {
        let text = GOOD.replace(
            "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
            "measures = { segment = [\"sum\"], spend = [] }\nrule = { type = \"list\", list_columns = [\"age\"] }",
        );
        let got = errors(&text);
        assert!(
            got.iter()
                .any(|g| g.contains("column 'segment': conflicting roles: a measure")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|g| g.contains("column 'spend': measure allows no aggregate function")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|g| g.contains("column 'age': list column must be a dimension")),
            "{got:?}"
        );
    }
}
