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
            format!("{t}\n({} rows)", rows.len())
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
