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

mod validate;
use crate::template::Template;

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

pub use airlock_protocol::refusal::RuleKind;

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

/// A dataset as written: a name the owner registered in its own node's
/// catalog (where the data is, and its credentials, stay there), read in
/// place by that node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Dataset name, as registered in the owner's node catalog.
    pub name: String,
    /// Owning member.
    pub owner: String,
    /// Refused if present: a location in the shared file would disclose the
    /// owner's storage to every member and the hub (it goes in the owner's
    /// catalog). Read only to say so.
    #[serde(default, skip_serializing)]
    pub path: Option<toml::Value>,
    /// Refused if present, as `path` is.
    #[serde(default, skip_serializing)]
    pub format: Option<toml::Value>,
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
    /// The validated configuration (read through [`Collaboration::config`]:
    /// a validated collaboration cannot be changed into an invalid one).
    config: CollaborationConfig,
    /// The file it came from (for messages).
    file: String,
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
    /// The validated configuration. To change it, edit a copy and
    /// validate that again ([`Collaboration::validate`]).
    pub fn config(&self) -> &CollaborationConfig {
        &self.config
    }

    /// The file it came from (for messages).
    pub fn file(&self) -> &str {
        &self.file
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
        let mut out = self.shared_changes(next);
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

    /// What a new version `next` changes that belongs to no single member
    /// and so no version may change: the collaboration's identity, the
    /// member list and abilities, the privacy budget, the schema contract,
    /// the mode, the purposes, the retention period. Empty if none. The hub
    /// refuses such a version ([`Collaboration::changes_beyond`]) and so
    /// does every node, whoever approved it.
    pub fn shared_changes(&self, next: &Collaboration) -> Vec<String> {
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

#[cfg(test)]
mod tests;
