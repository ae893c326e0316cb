//! `airlock records`: a GDPR Art. 30-style record of processing for one
//! collaboration, built from its current definition and its audit chain
//! (verified first), as JSON and Markdown.

use std::collections::BTreeMap;

use airlock_policy::{Ability, Collaboration, ColumnRole};
use airlock_protocol::AuditEvent;
use airlock_store::{verify_chain, AuditEntry};
use serde_json::{json, Value};

/// The record for `collab` from its audit chain `audit`, listing the
/// analyses submitted in `[from_ms, to_ms)`. Fails if the chain does not
/// verify.
pub fn build(
    collab: &Collaboration,
    audit: &[AuditEntry],
    from_ms: i64,
    to_ms: i64,
) -> Result<Value, String> {
    verify_chain(audit).map_err(|e| format!("the audit chain does not verify: {e}"))?;
    let c = &collab.config();
    let members: Vec<Value> = c
        .members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "abilities": m.abilities.iter().map(|a| format!("{a:?}").to_lowercase()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let recipients: Vec<&str> = c
        .members
        .iter()
        .filter(|m| m.abilities.contains(&Ability::Receive))
        .map(|m| m.name.as_str())
        .collect();
    let categories: Vec<Value> = c
        .tables
        .iter()
        .map(|t| {
            let mut roles: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for col in t.columns() {
                let role = match t.role(&col) {
                    Some(ColumnRole::Identity { .. }) => "identity (pseudonymised, never output)",
                    Some(ColumnRole::Join) => "join keys (pseudonymised, never output)",
                    Some(ColumnRole::Dimension) => "dimensions (grouped and output)",
                    Some(ColumnRole::Measure(_)) => "measures (aggregated only)",
                    None => continue,
                };
                roles.entry(role).or_default().push(col);
            }
            let dataset = collab.dataset(&t.dataset);
            json!({
                "table": t.alias,
                "owner": collab.owner_of(&t.alias),
                "columns": roles,
                "rule": t.rule.kind().name(),
                "min_distinct_people": t.min_distinct_identities(),
                "differential_privacy": t.dp().map(|d| json!({"epsilon_per_query": d.query_epsilon(), "delta": d.delta})),
                "consent": dataset.map(|d| serde_json::to_value(&d.consent).unwrap_or(Value::Null)),
            })
        })
        .collect();
    let templates: Vec<Value> = c
        .templates
        .iter()
        .map(|t| {
            let hash = t.hash();
            json!({
                "name": t.name,
                "hash": hash,
                "purpose": t.purpose,
                "approved_by": c.members.iter().filter(|m| collab.approves(&m.name, &hash)).map(|m| m.name.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    // Each entry as its typed event (an entry of a kind this build does not
    // know, or written with other fields, is left out of the record).
    let events: Vec<(&AuditEntry, AuditEvent)> = audit
        .iter()
        .filter_map(|e| {
            let payload: Value = serde_json::from_str(&e.payload).ok()?;
            Some((e, AuditEvent::parse(&e.kind, &payload)?))
        })
        .collect();
    // Approvals and revocations of templates in the period.
    let approvals: Vec<Value> = events
        .iter()
        .filter(|(e, _)| (from_ms..to_ms).contains(&e.at_ms))
        .filter_map(|(e, event)| {
            let (template, hash) = match event {
                AuditEvent::TemplateApproved(d) | AuditEvent::TemplateRevoked(d) => {
                    (&d.template, &d.hash)
                }
                AuditEvent::TemplateApprovalRefused { template, hash, .. } => (template, hash),
                _ => return None,
            };
            Some(json!({
                "event": e.kind,
                "member": e.actor,
                "at_ms": e.at_ms,
                "template": template,
                "hash": hash,
            }))
        })
        .collect();
    // Analyses: each submitted query in the period, with how it ended.
    let mut analyses: Vec<Value> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (e, event) in &events {
        let Some(id) = event.query() else {
            continue;
        };
        if let AuditEvent::QuerySubmitted { sql, .. } = event {
            if (from_ms..to_ms).contains(&e.at_ms) {
                index.insert(id.to_string(), analyses.len());
                analyses.push(json!({
                    "query": id,
                    "analyst": e.actor,
                    "submitted_at_ms": e.at_ms,
                    "sql": sql,
                    "outcome": "submitted",
                }));
            }
            continue;
        }
        let Some(&i) = index.get(id) else {
            continue;
        };
        let outcome = match event {
            AuditEvent::QueryReleased { .. } => Some("released"),
            AuditEvent::QueryRefused(_) => Some("refused"),
            AuditEvent::QueryFailed(_) => Some("failed"),
            AuditEvent::ResultDeleted { .. } => Some("released; result deleted after retention"),
            _ => None,
        };
        if let Some(o) = outcome {
            analyses[i]["outcome"] = json!(o);
        }
        if let AuditEvent::ResultDelivered { .. } = event {
            analyses[i]["delivered_to"] = json!(e.actor);
        }
    }
    Ok(json!({
        "record_of_processing": collab.name(),
        "collaboration_id": collab.id(),
        "period_ms": [from_ms, to_ms],
        "parties": members,
        "purposes": c.collaboration.purposes,
        "categories_of_data": categories,
        "recipients": recipients,
        "transfers": "none: each member's rows are read in place by its own node; only pseudonymised columns (to the executor) and released aggregates leave it",
        "retention_days": c.collaboration.retention_days.unwrap_or(30),
        "privacy_budget": c.privacy.as_ref().map(|p| json!({"epsilon": p.epsilon, "delta": p.delta, "refresh_days": p.refresh_days})),
        "security_measures": [
            "keyed pseudonyms (keyed BLAKE3, per-collaboration secret held only by the members' nodes)",
            "query guard: analysis rules, minimum distinct people per output row",
            "differential privacy with a durable budget where configured",
            "consent and suppression lists applied at the source",
            "mutual TLS between hub and nodes; hashed, expiring API tokens",
            "tamper-evident audit chain (verified for this record)",
        ],
        "audit_chain_head": audit.last().map(|e| e.hash.clone()),
        "templates": templates,
        "template_approvals": approvals,
        "analyses": analyses,
    }))
}

/// The record as Markdown.
pub fn markdown(r: &Value) -> String {
    let mut out = format!(
        "# Record of processing: {}\n\nCollaboration id `{}`; analyses from unix ms {} to {}.\n\n## Parties\n\n",
        r["record_of_processing"].as_str().unwrap_or("?"),
        r["collaboration_id"].as_str().unwrap_or("?"),
        r["period_ms"][0],
        r["period_ms"][1]
    );
    for p in r["parties"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "- {} ({})\n",
            p["name"].as_str().unwrap_or("?"),
            p["abilities"]
        ));
    }
    out.push_str(&format!(
        "\n## Purposes\n\n{}\n\n## Categories of personal data\n\n",
        r["purposes"]
    ));
    for t in r["categories_of_data"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "- table `{}` of {} ({} rule): {}\n",
            t["table"].as_str().unwrap_or("?"),
            t["owner"].as_str().unwrap_or("?"),
            t["rule"].as_str().unwrap_or("?"),
            t["columns"]
        ));
    }
    out.push_str(&format!(
        "\n## Recipients\n\n{}\n\n## Transfers\n\n{}\n\n## Retention\n\nReleased results are deleted {} days after release.\n\n## Security measures\n\n",
        r["recipients"],
        r["transfers"].as_str().unwrap_or(""),
        r["retention_days"]
    ));
    for m in r["security_measures"].as_array().into_iter().flatten() {
        out.push_str(&format!("- {}\n", m.as_str().unwrap_or("")));
    }
    out.push_str("\n## Analysis templates\n\n");
    for t in r["templates"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "- `{}` (hash `{}`), purpose {}, approved by {}\n",
            t["name"].as_str().unwrap_or("?"),
            t["hash"].as_str().unwrap_or("?"),
            t["purpose"].as_str().unwrap_or("?"),
            t["approved_by"]
        ));
    }
    for a in r["template_approvals"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "- at unix ms {}: {} by {} of `{}`\n",
            a["at_ms"],
            a["event"].as_str().unwrap_or("?"),
            a["member"].as_str().unwrap_or("?"),
            a["template"].as_str().unwrap_or("?")
        ));
    }
    out.push_str("\n## Analyses in the period\n\n| submitted (unix ms) | analyst | outcome | SQL |\n|---|---|---|---|\n");
    for a in r["analyses"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} | {} | `{}` |\n",
            a["submitted_at_ms"],
            a["analyst"].as_str().unwrap_or("?"),
            a["outcome"].as_str().unwrap_or("?"),
            a["sql"]
                .as_str()
                .unwrap_or("")
                .replace('\n', " ")
                .replace('|', "\\|")
        ));
    }
    out.push_str(&format!(
        "\nAudit chain head: `{}`\n",
        r["audit_chain_head"].as_str().unwrap_or("none")
    ));
    out
}
