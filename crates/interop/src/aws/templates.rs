//! Analysis templates to and from Airlock's templates (parameters
//! swapped between AWS's `:name` and Airlock's `{name}`).

#[allow(clippy::wildcard_imports)]
use super::*;
use airlock_policy::{ParamSpec, ParamType, Template, Written};

/// Rewrites `:name` parameter references (outside quoted strings and
/// comments) as `$name`, or back, for the declared names only.
pub(super) fn swap_params(sql: &str, names: &[String], from: char, to: char) -> String {
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
