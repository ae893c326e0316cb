//! `airlock template`: list a collaboration's analysis templates, and
//! approve (after static verification) or revoke one as a data owner, on a
//! collaboration file in process or on a hub.

use std::fmt::Write as _;
use std::path::Path;

use airlock_policy::{Ability, Collaboration, Control, Refusal};

use crate::cluster::{CliError, Cluster};

/// One line per template: name, short hash, purpose, parameters, approvals.
pub fn describe(views: &[airlock_service::api::TemplateView]) -> String {
    let mut out = String::new();
    if views.is_empty() {
        out.push_str("no templates\n");
    }
    for v in views {
        let params = v
            .params
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, spec)| format!("{k}: {}", spec["type"].as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let approved = if v.approved_by.is_empty() {
            "nobody".to_string()
        } else {
            v.approved_by.join(", ")
        };
        let _ = writeln!(
            out,
            "{}  hash {}  purpose {}  params ({params})  approved by {approved}",
            v.name,
            &v.hash[..12],
            v.purpose
        );
    }
    out
}

/// The templates of a collaboration file.
pub fn views(collab: &Collaboration) -> Vec<airlock_service::api::TemplateView> {
    collab
        .config()
        .templates
        .iter()
        .map(|t| airlock_service::api::TemplateView::new(collab, t))
        .collect()
}

/// Approves (after static verification against every rule, for every
/// allowed parameter value) or revokes `template` for `member` in the
/// collaboration file at `path`, rewriting only `member`'s `[approvals]`
/// entry. Returns what was done, in words.
pub async fn set_approval_in_file(
    path: &Path,
    member: &str,
    template: &str,
    approve: bool,
) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))?;
    let file = path.display().to_string();
    let collab =
        Collaboration::from_toml(&text, &file).map_err(|e| CliError::BadInput(e.to_string()))?;
    if collab.member(member).is_none() {
        return Err(CliError::BadInput(format!(
            "'{member}' is not a member of collaboration '{}'",
            collab.name()
        )));
    }
    if !collab.has_ability(member, Ability::Provide) {
        return Err(CliError::Refused {
            refusal: Refusal::new(
                Control::Ability,
                format!("only a data owner (the 'provide' ability) approves templates; '{member}' is not one"),
            ),
            node: None,
        });
    }
    let t = collab
        .template(template)
        .ok_or_else(|| {
            CliError::BadInput(format!(
                "collaboration '{}' has no template named '{template}' (or with that hash)",
                collab.name()
            ))
        })?
        .clone();
    let hash = t.hash();
    let mut checks = 0;
    if approve {
        let cluster = Cluster::open(path, None).await?;
        checks = cluster.verify_template(&t).await.map_err(|reasons| {
            CliError::Refused {
                refusal: Refusal::new(
                    Control::TemplateApproval,
                    format!(
                        "template '{}' could break a rule for some allowed parameter values; approval refused:\n  {}",
                        t.name,
                        reasons.join("\n  ")
                    ),
                ),
                node: None,
            }
        })?;
    }
    let next_text = airlock_policy::template::edit_approval(&text, member, &hash, approve)
        .map_err(CliError::BadInput)?;
    let next = Collaboration::from_toml(&next_text, &file)
        .map_err(|e| CliError::Failed(format!("the edited file does not validate: {e}")))?;
    let beyond = collab.changes_beyond(&next, member);
    if !beyond.is_empty() {
        return Err(CliError::Failed(format!(
            "the edit changed more than the approvals of '{member}': {}",
            beyond.join(", ")
        )));
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, &next_text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(if approve {
        format!(
            "'{member}' approves template '{}' at hash {hash}: static verification passed {checks} checks (every allowed parameter value, every analyst)",
            t.name
        )
    } else {
        format!(
            "'{member}' no longer approves template '{}' (hash {hash})",
            t.name
        )
    })
}
