//! Analysis templates: parameterised SQL pinned by its content hash.
//!
//! A template is SQL text with typed, named parameters (`$segment`), each
//! with its allowed values or range. It is identified by the SHA-256 of its
//! canonical JSON form, so a changed text, parameter or purpose is a new
//! template that nobody has approved yet. Each owner of a table it reads
//! approves that exact hash (and may revoke it) in the collaboration file's
//! `[approvals]` section, which only that owner may change.
//!
//! Parameter values are parsed here by type and checked against the
//! template's declaration, then bound as typed values into the planned
//! query (DataFusion placeholders): they are never spliced into SQL text.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use airlock_protocol::{Literal, TemplateRun};

/// Largest template text accepted, in bytes.
pub const MAX_TEMPLATE_SQL: usize = 64 * 1024;
/// Largest parameter value accepted, in bytes.
pub const MAX_PARAM_VALUE: usize = 1024;
/// Most parameter combinations checked when a template is approved.
pub const MAX_COMBINATIONS: usize = 4096;

/// The type of a template parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// 64-bit integer.
    Int,
    /// 64-bit float.
    Float,
    /// Text; must list its allowed values.
    String,
    /// Calendar date, written `YYYY-MM-DD`.
    Date,
}

impl ParamType {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::String => "string",
            ParamType::Date => "date",
        }
    }
}

/// A value as written in a template declaration (TOML or JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Written {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text (also dates).
    Str(String),
}

/// One parameter's declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The values it may take (required for strings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<Written>,
    /// Smallest value (ints, floats, dates), with `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Written>,
    /// Largest value (ints, floats, dates), with `min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Written>,
    /// Value used when a run does not give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Written>,
}

/// An analysis template as written in `[[templates]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Name, unique in the collaboration.
    pub name: String,
    /// What its results are for: one of the collaboration's purposes.
    pub purpose: String,
    /// The SQL, with parameters written `$name`.
    pub sql: String,
    /// Members who may run it (default: every member with `query`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysts: Vec<String>,
    /// Parameters by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, ParamSpec>,
}

/// What an analyst asks for: ad hoc SQL, or a run of a template by name
/// (or hash) with parameter values given as text; and the purpose the
/// output serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    /// Ad hoc SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// A template's name or hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Parameter values, as text, parsed by each parameter's type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The purpose the output serves (a template's is its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// A destination configured on the querier's own node: the released
    /// result is written there by that node, and the hub keeps no copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<String>,
}

impl QuerySpec {
    /// Ad hoc SQL with no declared purpose.
    pub fn sql(sql: impl Into<String>) -> Self {
        QuerySpec {
            sql: Some(sql.into()),
            ..QuerySpec::default()
        }
    }

    /// A run of a template.
    pub fn template(name: impl Into<String>, params: BTreeMap<String, String>) -> Self {
        QuerySpec {
            template: Some(name.into()),
            params,
            ..QuerySpec::default()
        }
    }

    /// A one-line description for query records: the SQL, or the template
    /// and the parameter values the analyst gave.
    pub fn describe(&self) -> String {
        match (&self.sql, &self.template) {
            (Some(sql), _) => sql.clone(),
            (None, Some(t)) => format!(
                "template {t} ({})",
                self.params
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.chars().take(80).collect::<String>()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, None) => String::new(),
        }
    }
}

fn is_param_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 64
}

/// Whether `s` is a template hash (64 lowercase hex characters).
pub fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, if it is one.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

/// A bound value written back as text (for messages and records).
pub fn literal_text(v: &Literal) -> String {
    match v {
        Literal::Null => "NULL".into(),
        Literal::Bool(b) => b.to_string(),
        Literal::Int(i) => i.to_string(),
        Literal::Float(f) => f.to_string(),
        Literal::Str(s) => s.clone(),
        Literal::Date(d) => {
            // Civil from days (Howard Hinnant's algorithm).
            let z = i64::from(*d) + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

impl ParamSpec {
    /// Converts a written value to this parameter's type.
    fn typed(&self, w: &Written) -> Result<Literal, String> {
        let t = self.kind.name();
        match (self.kind, w) {
            (ParamType::Int, Written::Int(i)) => Ok(Literal::Int(*i)),
            (ParamType::Float, Written::Float(f)) if f.is_finite() => Ok(Literal::Float(*f)),
            (ParamType::Float, Written::Int(i)) => Ok(Literal::Float(*i as f64)),
            (ParamType::String, Written::Str(s)) => Ok(Literal::Str(s.clone())),
            (ParamType::Date, Written::Str(s)) => parse_date(s)
                .map(Literal::Date)
                .ok_or_else(|| "a date must be written YYYY-MM-DD".to_string()),
            _ => Err(format!("a value of type {t} was expected")),
        }
    }

    /// Parses a value given as text (command line, API) by this type.
    fn parse(&self, text: &str) -> Result<Literal, String> {
        if text.len() > MAX_PARAM_VALUE {
            return Err(format!("longer than {MAX_PARAM_VALUE} bytes"));
        }
        match self.kind {
            ParamType::Int => text
                .trim()
                .parse::<i64>()
                .map(Literal::Int)
                .map_err(|_| "not an integer".to_string()),
            ParamType::Float => match text.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Literal::Float(f)),
                _ => Err("not a finite number".to_string()),
            },
            ParamType::String => Ok(Literal::Str(text.to_string())),
            ParamType::Date => parse_date(text.trim())
                .map(Literal::Date)
                .ok_or_else(|| "not a date written YYYY-MM-DD".to_string()),
        }
    }

    fn range(&self) -> Option<(Literal, Literal)> {
        let lo = self.typed(self.min.as_ref()?).ok()?;
        let hi = self.typed(self.max.as_ref()?).ok()?;
        Some((lo, hi))
    }

    /// Whether a typed value is allowed by this declaration.
    fn admits(&self, v: &Literal) -> Result<(), String> {
        if !self.allowed.is_empty() {
            let ok = self
                .allowed
                .iter()
                .filter_map(|w| self.typed(w).ok())
                .any(|a| &a == v);
            return if ok {
                Ok(())
            } else {
                Err("not one of the allowed values".to_string())
            };
        }
        let Some((lo, hi)) = self.range() else {
            return Err("the parameter declares no allowed values".to_string());
        };
        let inside = match (v, &lo, &hi) {
            (Literal::Int(x), Literal::Int(a), Literal::Int(b)) => a <= x && x <= b,
            (Literal::Float(x), Literal::Float(a), Literal::Float(b)) => a <= x && x <= b,
            (Literal::Date(x), Literal::Date(a), Literal::Date(b)) => a <= x && x <= b,
            _ => false,
        };
        if inside {
            Ok(())
        } else {
            Err("outside the allowed range".to_string())
        }
    }

    /// The values static verification checks: every allowed value, or the
    /// ends of the range (the guard's decisions depend on a literal's type,
    /// never on its value, so the ends stand for the whole range).
    fn representatives(&self) -> Vec<Literal> {
        if !self.allowed.is_empty() {
            return self
                .allowed
                .iter()
                .filter_map(|w| self.typed(w).ok())
                .collect();
        }
        match self.range() {
            Some((lo, hi)) if lo == hi => vec![lo],
            Some((lo, hi)) => vec![lo, hi],
            None => Vec::new(),
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let t = self.kind.name();
        for w in self.allowed.iter().chain(&self.min).chain(&self.max) {
            if let Err(e) = self.typed(w) {
                out.push(format!("{e} (declared type {t})"));
            }
        }
        let mut seen = Vec::new();
        for w in &self.allowed {
            if let Ok(v) = self.typed(w) {
                if seen.contains(&v) {
                    out.push("an allowed value is listed twice".to_string());
                }
                seen.push(v);
            }
        }
        if self.allowed.len() > MAX_COMBINATIONS {
            out.push(format!("more than {MAX_COMBINATIONS} allowed values"));
        }
        let has_range = self.min.is_some() || self.max.is_some();
        match (self.kind, self.allowed.is_empty(), has_range) {
            (_, false, true) => {
                out.push("give either allowed values or min and max, not both".into())
            }
            (ParamType::String, true, _) => {
                out.push("a string parameter must list its allowed values".into())
            }
            (_, true, false) => out.push("give its allowed values, or min and max".into()),
            (_, true, true) => {
                if self.min.is_none() || self.max.is_none() {
                    out.push("a range needs both min and max".into());
                } else if let Some((lo, hi)) = self.range() {
                    let ordered = match (&lo, &hi) {
                        (Literal::Int(a), Literal::Int(b)) => a <= b,
                        (Literal::Float(a), Literal::Float(b)) => a <= b,
                        (Literal::Date(a), Literal::Date(b)) => a <= b,
                        _ => true,
                    };
                    if !ordered {
                        out.push("min is greater than max".into());
                    }
                }
            }
            (_, false, false) => {}
        }
        if let Some(d) = &self.default {
            match self.typed(d) {
                Err(e) => out.push(format!("default: {e} (declared type {t})")),
                Ok(v) => {
                    if out.is_empty() {
                        if let Err(e) = self.admits(&v) {
                            out.push(format!("default is {e}"));
                        }
                    }
                }
            }
        }
        out
    }
}

impl Template {
    /// The content hash: SHA-256 of the template's canonical JSON (fields in
    /// declared order, parameters sorted by name), as 64 hex characters.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }

    /// The hash shortened for display.
    pub fn short_hash(&self) -> String {
        self.hash()[..12].to_string()
    }

    /// Problems with the declaration itself (the SQL is checked by the guard).
    pub fn problems(&self, purposes: &BTreeSet<&str>, analysts: &BTreeSet<&str>) -> Vec<String> {
        let mut out = Vec::new();
        if !is_param_name(&self.name) {
            out.push("name must be a lowercase identifier of at most 64 characters".into());
        }
        if !purposes.contains(self.purpose.as_str()) {
            out.push(format!(
                "purpose '{}' is not one of the collaboration's purposes",
                self.purpose
            ));
        }
        if self.sql.trim().is_empty() {
            out.push("sql is empty".into());
        }
        if self.sql.len() > MAX_TEMPLATE_SQL {
            out.push(format!("sql is longer than {MAX_TEMPLATE_SQL} bytes"));
        }
        for a in &self.analysts {
            if !analysts.contains(a.as_str()) {
                out.push(format!(
                    "analyst '{a}' is not a member with the 'query' ability"
                ));
            }
        }
        for (name, spec) in &self.params {
            if !is_param_name(name) {
                out.push(format!(
                    "parameter '{name}': name must be a lowercase identifier"
                ));
            }
            for e in spec.problems() {
                out.push(format!("parameter '{name}': {e}"));
            }
        }
        if self.combinations().is_err() {
            out.push(format!(
                "its parameters allow more than {MAX_COMBINATIONS} combinations to verify"
            ));
        }
        out
    }

    /// Binds values given as text: each is parsed by its declared type and
    /// checked against its allowed values or range; missing ones take their
    /// default. Every problem is returned, naming the parameter, never
    /// echoing the value.
    pub fn bind(&self, given: &BTreeMap<String, String>) -> Result<TemplateRun, Vec<String>> {
        let mut problems = Vec::new();
        let mut params = BTreeMap::new();
        for name in given.keys() {
            if !self.params.contains_key(name) {
                problems.push(format!(
                    "template '{}' has no parameter '{}'",
                    self.name,
                    name.chars().take(64).collect::<String>()
                ));
            }
        }
        for (name, spec) in &self.params {
            let value = match (given.get(name), &spec.default) {
                (Some(text), _) => spec.parse(text),
                (None, Some(d)) => spec.typed(d),
                (None, None) => {
                    problems.push(format!("parameter '{name}' needs a value"));
                    continue;
                }
            };
            match value.and_then(|v| spec.admits(&v).map(|()| v)) {
                Ok(v) => {
                    params.insert(name.clone(), v);
                }
                Err(e) => problems.push(format!(
                    "parameter '{name}' ({}): the value given is {e}",
                    spec.kind.name()
                )),
            }
        }
        if problems.is_empty() {
            Ok(TemplateRun {
                name: self.name.clone(),
                hash: self.hash(),
                params,
            })
        } else {
            Err(problems)
        }
    }

    /// Checks a run received from elsewhere (a fragment): same template,
    /// every parameter present with an admitted value of its type.
    pub fn admits(&self, run: &TemplateRun) -> Result<(), String> {
        if run.hash != self.hash() {
            return Err("the run is of another version of the template".into());
        }
        if run.params.len() != self.params.len() {
            return Err("the run does not bind exactly the template's parameters".into());
        }
        for (name, spec) in &self.params {
            let Some(v) = run.params.get(name) else {
                return Err(format!("parameter '{name}' is not bound"));
            };
            spec.admits(v)
                .map_err(|e| format!("parameter '{name}': the value is {e}"))?;
        }
        Ok(())
    }

    /// Every combination of the parameters' representative values, for
    /// static verification; an error if there are more than
    /// [`MAX_COMBINATIONS`].
    pub fn combinations(&self) -> Result<Vec<BTreeMap<String, Literal>>, usize> {
        let mut out = vec![BTreeMap::new()];
        for (name, spec) in &self.params {
            let values = spec.representatives();
            let n = out.len().saturating_mul(values.len().max(1));
            if n > MAX_COMBINATIONS {
                return Err(n);
            }
            let mut next = Vec::with_capacity(n);
            for combo in &out {
                for v in &values {
                    let mut c = combo.clone();
                    c.insert(name.clone(), v.clone());
                    next.push(c);
                }
            }
            out = next;
        }
        Ok(out)
    }
}

/// Adds (`approve = true`) or removes a template hash in `member`'s
/// `[approvals]` entry of a collaboration file's text, keeping the rest of
/// the text (comments, order) as it is.
pub fn edit_approval(
    text: &str,
    member: &str,
    hash: &str,
    approve: bool,
) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        format!("not a valid collaboration file: {}", e.message())
    })?;
    if !doc.contains_key("approvals") {
        let mut t = toml_edit::Table::new();
        t.set_implicit(false);
        doc.insert("approvals", toml_edit::Item::Table(t));
    }
    let approvals = doc["approvals"]
        .as_table_like_mut()
        .ok_or("[approvals] is not a table")?;
    if approvals.get(member).is_none() {
        approvals.insert(member, toml_edit::value(toml_edit::Array::new()));
    }
    let list = approvals
        .get_mut(member)
        .and_then(|i| i.as_array_mut())
        .ok_or_else(|| format!("approvals.{member} is not a list"))?;
    let present = list.iter().any(|v| v.as_str() == Some(hash));
    if approve && !present {
        list.push(hash);
    }
    if !approve {
        list.retain(|v| v.as_str() != Some(hash));
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        toml::from_str(
            r#"
name = "overlap_by_segment"
purpose = "measurement"
sql = "SELECT segment, COUNT(DISTINCT email) AS people FROM audience WHERE segment = $segment AND age >= $min_age GROUP BY segment"
[params.segment]
type = "string"
allowed = ["sports", "news"]
[params.min_age]
type = "int"
min = 18
max = 99
default = 18
"#,
        )
        .expect("template")
    }

    #[test]
    fn binds_typed_values_and_refuses_bad_ones_by_name() {
        let t = template();
        let ok = t
            .bind(&BTreeMap::from([("segment".into(), "news".into())]))
            .expect("binds");
        assert_eq!(ok.params["segment"], Literal::Str("news".into()));
        assert_eq!(ok.params["min_age"], Literal::Int(18));
        assert_eq!(ok.hash, t.hash());
        let bad = t
            .bind(&BTreeMap::from([
                ("segment".into(), "news' OR '1'='1".into()),
                ("min_age".into(), "18 OR 1=1".into()),
                ("limit".into(), "5".into()),
            ]))
            .expect_err("refused");
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(bad
            .iter()
            .any(|e| e.contains("'segment'") && e.contains("not one of the allowed values")));
        assert!(bad
            .iter()
            .any(|e| e.contains("'min_age'") && e.contains("not an integer")));
        assert!(bad.iter().any(|e| e.contains("no parameter 'limit'")));
        assert!(
            bad.iter().all(|e| !e.contains("OR")),
            "values are never echoed: {bad:?}"
        );
        let range = t
            .bind(&BTreeMap::from([
                ("segment".into(), "sports".into()),
                ("min_age".into(), "100".into()),
            ]))
            .expect_err("out of range");
        assert!(range[0].contains("outside the allowed range"));
    }

    #[test]
    fn the_hash_pins_the_content() {
        let t = template();
        let mut changed = t.clone();
        changed.sql = changed.sql.replace(">=", ">");
        assert_ne!(t.hash(), changed.hash());
        let mut purpose = t.clone();
        purpose.purpose = "activation".into();
        assert_ne!(t.hash(), purpose.hash());
        assert_eq!(t.hash(), template().hash());
        assert!(is_hash(&t.hash()));
        let combos = t.combinations().expect("few");
        assert_eq!(combos.len(), 4, "2 segments x the range's two ends");
    }

    #[test]
    fn bad_declarations_are_named() {
        let purposes = BTreeSet::from(["measurement"]);
        let analysts = BTreeSet::from(["advertiser"]);
        let bad: Template = toml::from_str(
            r#"
name = "Bad Name"
purpose = "resale"
sql = " "
analysts = ["nobody"]
[params.s]
type = "string"
[params.n]
type = "int"
min = 10
max = 1
[params.d]
type = "date"
allowed = ["2026-02-30"]
[params.f]
type = "float"
allowed = [1.5]
min = 1.0
"#,
        )
        .expect("parses");
        let p = bad.problems(&purposes, &analysts);
        for want in [
            "name must be a lowercase identifier",
            "purpose 'resale' is not one of",
            "sql is empty",
            "analyst 'nobody' is not a member",
            "parameter 's': a string parameter must list its allowed values",
            "parameter 'n': min is greater than max",
            "parameter 'd': a date must be written YYYY-MM-DD",
            "parameter 'f': give either allowed values or min and max",
        ] {
            assert!(p.iter().any(|e| e.contains(want)), "{want}: {p:?}");
        }
        let unknown = toml::from_str::<Template>(
            "name = \"t\"\npurpose = \"measurement\"\nsql = \"SELECT 1\"\nowner = \"x\"",
        );
        assert!(unknown.is_err(), "unknown fields are refused");
    }

    #[test]
    fn dates_round_trip() {
        for (text, days) in [
            ("1970-01-01", 0),
            ("2000-02-29", 11_016),
            ("2026-11-30", 20_787),
        ] {
            assert_eq!(parse_date(text), Some(days), "{text}");
            assert_eq!(literal_text(&Literal::Date(days)), text);
        }
        for bad in [
            "2026-13-01",
            "2026-02-29",
            "26-01-01",
            "2026-1-01",
            "2026-01-0a",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn approvals_are_edited_in_place() {
        let text = "# my file\n[collaboration]\nname = \"c\"\n";
        let h = "a".repeat(64);
        let once = edit_approval(text, "publisher", &h, true).expect("edit");
        assert!(once.starts_with("# my file"));
        let twice = edit_approval(&once, "publisher", &h, true).expect("edit");
        assert_eq!(once, twice, "approving twice changes nothing");
        let v: toml::Value = toml::from_str(&twice).expect("toml");
        assert_eq!(v["approvals"]["publisher"][0].as_str(), Some(h.as_str()));
        let revoked = edit_approval(&twice, "publisher", &h, false).expect("edit");
        let v: toml::Value = toml::from_str(&revoked).expect("toml");
        assert_eq!(
            v["approvals"]["publisher"].as_array().map(Vec::len),
            Some(0)
        );
        assert!(edit_approval("not = [toml", "p", &h, true).is_err());
    }
}
