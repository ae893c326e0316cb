//! Printing released results as terminal tables, CSV or JSON.

use airlock_hub::Released;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

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

pub use airlock_service::results::noise_footer;
use airlock_service::results::{cells, numeric};

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
        Format::Csv => airlock_service::results::csv(r)?,
        Format::Json => serde_json::to_string_pretty(&airlock_service::results::json_objects(r)?)
            .map_err(|e| e.to_string())?,
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
