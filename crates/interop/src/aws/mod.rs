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

mod rules;
mod shapes;
mod templates;
#[cfg(test)]
mod tests;

pub use rules::{export_rule, import_rule, TableSpec};
pub use shapes::*;
pub use templates::{export_template, import_template};

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
