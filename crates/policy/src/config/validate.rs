//! Validation of a parsed configuration, one function per section, in the
//! order the problems are reported: the collaboration, its members,
//! datasets, purposes, consent sources, configured tables (and their column
//! roles), custom rules, the schema contract, source columns, crypto mode,
//! templates, approvals and the privacy budget. Every problem is collected
//! (none stops the others) and names the file, the table and the column.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Ability, AnalysisRule, CanonicalType, Collaboration, CollaborationConfig, ConfigError,
    ConfigErrors, ConfiguredTable, Dataset, Member, Mode, SCALAR_FUNCTIONS,
};
use crate::template::is_hash;
use crate::RESERVED_PREFIX;

type Members<'c> = BTreeMap<&'c str, &'c Member>;
type Datasets<'c> = BTreeMap<&'c str, &'c Dataset>;

impl Collaboration {
    /// Validates a parsed configuration.
    pub fn validate(config: CollaborationConfig, file: &str) -> Result<Self, ConfigErrors> {
        let mut p = Problems {
            file,
            list: Vec::new(),
        };
        let c = &config;
        collaboration(c, &mut p);
        let members = members(c, &mut p);
        let datasets = datasets(c, &members, &mut p);
        let purposes = purposes(c, &mut p);
        consent(c, &datasets, &purposes, &mut p);
        tables(c, &datasets, &mut p);
        let analysts = analysts(c);
        custom_rules(c, &analysts, &mut p);
        schema(c, &mut p);
        source_columns(c, &mut p);
        crypto(c, &mut p);
        templates(c, &purposes, &analysts, &mut p);
        approvals(c, &members, &mut p);
        privacy(c, &mut p);
        // Columns joined under one contract must agree on nothing more than
        // the contract name; types are checked by the node against the data.
        if p.list.is_empty() {
            Ok(Collaboration {
                config,
                file: file.to_string(),
            })
        } else {
            Err(ConfigErrors(p.list))
        }
    }
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

/// `[collaboration]`: its name and secret file.
fn collaboration(c: &CollaborationConfig, p: &mut Problems<'_>) {
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
}

/// `[[members]]`: names, abilities, and someone who may query.
fn members<'c>(c: &'c CollaborationConfig, p: &mut Problems<'_>) -> Members<'c> {
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
    members
}

/// `[[datasets]]`: unique names, owners who are providing members, paths.
fn datasets<'c>(
    c: &'c CollaborationConfig,
    members: &Members<'c>,
    p: &mut Problems<'_>,
) -> Datasets<'c> {
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
        for (field, present) in [("path", d.path.is_some()), ("format", d.format.is_some())] {
            if present {
                p.add_about(
                    "dataset",
                    Some(&d.name),
                    None,
                    format!(
                        "'{field}' does not belong in the shared collaboration file: a dataset's location stays on its owner's node (register it in the owner's catalog as [datasets.{}], see docs/sources.md)",
                        d.name
                    ),
                );
            }
        }
    }
    datasets
}

/// `[collaboration]`'s retention and purposes.
fn purposes<'c>(c: &'c CollaborationConfig, p: &mut Problems<'_>) -> BTreeSet<&'c str> {
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
    purposes
}

/// Each dataset's consent sources, per declared purpose.
fn consent(
    c: &CollaborationConfig,
    datasets: &Datasets<'_>,
    purposes: &BTreeSet<&str>,
    p: &mut Problems<'_>,
) {
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
}

/// `[[tables]]`: aliases, datasets, column roles, DP rules.
fn tables(c: &CollaborationConfig, datasets: &Datasets<'_>, p: &mut Problems<'_>) {
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
        roles(t, p);
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
}

/// The members who may query.
fn analysts(c: &CollaborationConfig) -> BTreeSet<&str> {
    c.members
        .iter()
        .filter(|m| m.abilities.contains(&Ability::Query))
        .map(|m| m.name.as_str())
        .collect()
}

/// Custom rules name only members who may query.
fn custom_rules(c: &CollaborationConfig, analysts: &BTreeSet<&str>, p: &mut Problems<'_>) {
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
                        format!(
                            "custom rule: analyst '{a}' is not a member with the 'query' ability"
                        ),
                    );
                }
            }
        }
    }
}

/// `[schema]`: the contract's keys and dimensions, and the tables' use of them.
fn schema(c: &CollaborationConfig, p: &mut Problems<'_>) {
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
}

/// Each table's `source_columns`.
fn source_columns(c: &CollaborationConfig, p: &mut Problems<'_>) {
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
}

/// Crypto mode: a pair of providers, aggregates only, non-negative sums.
fn crypto(c: &CollaborationConfig, p: &mut Problems<'_>) {
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
}

/// `[[templates]]`: unique names, each template's own problems.
fn templates(
    c: &CollaborationConfig,
    purposes: &BTreeSet<&str>,
    analysts: &BTreeSet<&str>,
    p: &mut Problems<'_>,
) {
    let mut names = BTreeSet::new();
    for t in &c.templates {
        if !names.insert(t.name.as_str()) {
            p.add(None, None, format!("template '{}' declared twice", t.name));
        }
        for message in t.problems(purposes, analysts) {
            p.add(None, None, format!("template '{}': {message}", t.name));
        }
    }
}

/// `[approvals]`: members' template hashes.
fn approvals(c: &CollaborationConfig, members: &Members<'_>, p: &mut Problems<'_>) {
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
}

/// `[privacy]`: the budget.
fn privacy(c: &CollaborationConfig, p: &mut Problems<'_>) {
    if let Some(privacy) = &c.privacy {
        let names: Vec<String> = c.members.iter().map(|m| m.name.clone()).collect();
        for message in privacy.problems(&names) {
            p.add(None, None, message);
        }
    }
}

/// One table's column roles.
fn roles(t: &ConfiguredTable, p: &mut Problems<'_>) {
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
