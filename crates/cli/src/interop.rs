//! `airlock interop aws`: AWS Clean Rooms analysis rules and templates to
//! and from Airlock's collaboration file (see `docs/interop.md`).
//!
//! Output goes to standard output, or to `--out FILE` written whole or not
//! at all; notes (where Airlock or AWS ends up narrower) go to standard
//! error. A document that cannot be mapped writes nothing.

use std::collections::BTreeMap;
use std::path::Path;

use airlock_interop::aws::{self, Converted, TableSpec};
use airlock_policy::AggFunction;
use serde::Serialize;

use crate::cluster::{load_collaboration, CliError};

fn read(path: &Path) -> Result<String, CliError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > aws::MAX_DOCUMENT as u64 {
        return Err(CliError::BadInput(format!(
            "{}: the document is {} bytes, more than the {} accepted",
            path.display(),
            meta.len(),
            aws::MAX_DOCUMENT
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))
}

fn refused(path: &Path, errors: Vec<String>) -> CliError {
    CliError::BadInput(format!(
        "{} cannot be mapped; nothing was written:\n  {}",
        path.display(),
        errors.join("\n  ")
    ))
}

/// Writes `text` to `out` (atomically) or standard output, and the notes
/// to standard error.
pub fn emit(text: &str, notes: &[String], out: Option<&Path>) -> Result<(), CliError> {
    for n in notes {
        eprintln!("note: {n}");
    }
    match out {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(p) => {
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, p))
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", p.display())))
        }
    }
}

/// Parses `--measures amount=sum+avg,order_id=count`.
pub fn parse_measures(text: &str) -> Result<BTreeMap<String, Vec<AggFunction>>, CliError> {
    let mut out = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (col, fs) = part.split_once('=').ok_or_else(|| {
            CliError::BadInput(format!("--measures: '{part}' is not COLUMN=fn+fn"))
        })?;
        let mut list = Vec::new();
        for f in fs.split('+') {
            list.push(match f.trim() {
                "sum" => AggFunction::Sum,
                "avg" => AggFunction::Avg,
                "count" => AggFunction::Count,
                "count_distinct" => AggFunction::CountDistinct,
                other => {
                    return Err(CliError::BadInput(format!(
                        "--measures: '{other}' is not sum, avg, count or count_distinct"
                    )))
                }
            });
        }
        out.insert(col.trim().to_string(), list);
    }
    Ok(out)
}

/// `item` as a one-entry `[[key]]` block of a collaboration file, under a
/// comment naming the AWS document it came from.
fn block<T: Serialize>(key: &str, item: &T, what: &str, path: &Path) -> Result<String, CliError> {
    let body = toml::to_string(&BTreeMap::from([(key, [item])]))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(format!(
        "# Imported from AWS Clean Rooms {what} {}\n{body}",
        path.display()
    ))
}

/// The `[[tables]]` block of an imported rule.
pub fn import_rule(path: &Path, spec: &TableSpec) -> Result<Converted<String>, CliError> {
    let c = aws::import_rule(&read(path)?, spec).map_err(|e| refused(path, e))?;
    Ok(Converted {
        value: block("tables", &c.value, "analysis rule", path)?,
        notes: c.notes,
    })
}

/// The `[[templates]]` block of an imported template.
pub fn import_template(path: &Path, purpose: &str) -> Result<Converted<String>, CliError> {
    let c = aws::import_template(&read(path)?, purpose).map_err(|e| refused(path, e))?;
    Ok(Converted {
        value: block("templates", &c.value, "analysis template", path)?,
        notes: c.notes,
    })
}

/// A table's rule as a `CreateConfiguredTableAnalysisRule` input (JSON).
pub fn export_rule(collab: &Path, alias: &str) -> Result<Converted<String>, CliError> {
    let c = load_collaboration(collab)?;
    let t = c
        .table(alias)
        .ok_or_else(|| CliError::BadInput(format!("no configured table '{alias}'")))?;
    let out = aws::export_rule(t).map_err(|e| {
        CliError::BadInput(format!(
            "AWS Clean Rooms cannot express this rule; nothing was written:\n  {}",
            e.join("\n  ")
        ))
    })?;
    Ok(Converted {
        value: serde_json::to_string_pretty(&out.value)
            .map_err(|e| CliError::Failed(e.to_string()))?
            + "\n",
        notes: out.notes,
    })
}

/// A template as a `CreateAnalysisTemplate` input (JSON).
pub fn export_template(
    collab: &Path,
    name: &str,
    accept_wider: bool,
) -> Result<Converted<String>, CliError> {
    let c = load_collaboration(collab)?;
    let t = c
        .template(name)
        .ok_or_else(|| CliError::BadInput(format!("no template '{name}'")))?;
    let out = aws::export_template(t, accept_wider).map_err(|e| {
        CliError::BadInput(format!(
            "AWS Clean Rooms cannot express this template without accepting a wider one (--accept-wider); nothing was written:\n  {}",
            e.join("\n  ")
        ))
    })?;
    Ok(Converted {
        value: serde_json::to_string_pretty(&out.value)
            .map_err(|e| CliError::Failed(e.to_string()))?
            + "\n",
        notes: out.notes,
    })
}
