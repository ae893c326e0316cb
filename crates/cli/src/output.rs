//! Printing released results as terminal tables, CSV or JSON.

use airlock_hub::Released;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Output formats of `airlock query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A terminal table.
    Table,
    /// Comma-separated values with a header.
    Csv,
    /// A JSON array of objects.
    Json,
}

fn cells(r: &Released) -> Result<Vec<Vec<Option<String>>>, String> {
    let opts = FormatOptions::default();
    let mut rows = Vec::new();
    for b in &r.batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for i in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .zip(&fmts)
                    .map(|(c, f)| (!c.is_null(i)).then(|| f.value(i).to_string()))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

fn numeric(t: &DataType) -> bool {
    t.is_numeric()
}

/// For a result released under differential privacy: its noise and cost,
/// from the schema metadata the releasing guard wrote.
pub fn noise_footer(r: &Released) -> Option<String> {
    let meta = r.schema.metadata();
    let notes: Vec<serde_json::Value> =
        serde_json::from_str(meta.get(airlock_protocol::metadata::NOISE)?).ok()?;
    let mut out = String::from("differential privacy: noisy values, 95% of noise within");
    for n in &notes {
        let column = n["column"].as_str().unwrap_or("?");
        let scale = n["scale"].as_f64().unwrap_or(f64::NAN);
        let widths: Vec<String> = n["interval95"]
            .as_array()
            .map(|a| a.iter().map(|w| format!("±{w}")).collect())
            .unwrap_or_default();
        if widths.len() == 2 {
            out.push_str(&format!(
                "\n  {column}: noisy sum ({}) / noisy count ({})",
                widths[0], widths[1]
            ));
        } else {
            out.push_str(&format!(
                "\n  {column}: {} (discrete Laplace, scale {scale})",
                widths.join("")
            ));
        }
    }
    if let Some(cost) = meta
        .get(airlock_protocol::metadata::DP_COST)
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
    {
        out.push_str(&format!(
            "\n  cost: epsilon {}, delta {}",
            cost["epsilon"], cost["delta"]
        ));
    }
    Some(out)
}

/// Renders a released result.
pub fn render(r: &Released, format: Format) -> Result<String, String> {
    let rows = cells(r)?;
    let fields = r.schema.fields();
    Ok(match format {
        Format::Table => {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(fields.iter().map(|f| f.name().clone()));
            for row in &rows {
                t.add_row(
                    row.iter()
                        .map(|c| c.clone().unwrap_or_else(|| "NULL".into())),
                );
            }
            for (i, f) in fields.iter().enumerate() {
                if numeric(f.data_type()) {
                    if let Some(c) = t.column_mut(i) {
                        c.set_cell_alignment(CellAlignment::Right);
                    }
                }
            }
            match noise_footer(r) {
                Some(n) => format!("{t}\n({} rows)\n{n}", rows.len()),
                None => format!("{t}\n({} rows)", rows.len()),
            }
        }
        Format::Csv => {
            let quote = |s: &str| {
                if s.contains([',', '"', '\n']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s.to_string()
                }
            };
            let mut out = fields
                .iter()
                .map(|f| quote(f.name()))
                .collect::<Vec<_>>()
                .join(",");
            for row in &rows {
                out.push('\n');
                out.push_str(
                    &row.iter()
                        .map(|c| c.as_deref().map(quote).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            out
        }
        Format::Json => {
            let objects: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    let map = fields
                        .iter()
                        .zip(row)
                        .map(|(f, c)| {
                            let v = match c {
                                None => serde_json::Value::Null,
                                Some(s) if numeric(f.data_type()) => s
                                    .parse::<serde_json::Number>()
                                    .map(serde_json::Value::Number)
                                    .unwrap_or_else(|_| serde_json::Value::String(s.clone())),
                                Some(s) if f.data_type() == &DataType::Boolean => {
                                    serde_json::Value::Bool(s == "true")
                                }
                                Some(s) => serde_json::Value::String(s.clone()),
                            };
                            (f.name().clone(), v)
                        })
                        .collect();
                    serde_json::Value::Object(map)
                })
                .collect();
            serde_json::to_string_pretty(&objects).map_err(|e| e.to_string())?
        }
    })
}

/// One line saying what remains of a privacy budget.
pub fn budget_line(b: &airlock_service::api::BudgetView) -> String {
    let fmt = |l: &Option<airlock_service::api::BudgetLeft>| match l {
        None => "no budget".to_string(),
        Some(l) => {
            let mut s = format!("epsilon {:.3}, delta {:e}", l.epsilon, l.delta);
            if let Some(end) = l.period_ends_ms {
                s.push_str(&format!(" (fresh again at unix ms {end})"));
            }
            s
        }
    };
    format!(
        "privacy budget left in '{}': collaboration {}; for '{}' {}",
        b.collaboration,
        fmt(&b.collaboration_left),
        b.member,
        fmt(&b.member_left)
    )
}
