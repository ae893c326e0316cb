//! Released results as text: cells, CSV, JSON and Parquet, and their
//! differential-privacy notes. One home for the CLI (`airlock query
//! --format`) and the hub's `GET /v1/queries/{id}/result?format=` (the
//! console's tables and downloads).

use airlock_hub::Released;
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// A released result from the Arrow IPC bytes the hub stores.
pub fn decode(bytes: Vec<u8>) -> Result<Released, String> {
    let (schema, parts) = airlock_protocol::wire::decode_partitions(bytes)
        .map_err(|e| format!("unreadable result: {e}"))?;
    Ok(Released {
        schema,
        batches: parts.into_iter().flatten().collect(),
    })
}

/// Every cell as display text (`None` for NULL), row by row.
pub fn cells(r: &Released) -> Result<Vec<Vec<Option<String>>>, String> {
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

/// Whether a column of this type holds numbers.
pub fn numeric(t: &DataType) -> bool {
    t.is_numeric()
}

/// One cell as JSON: numbers for numeric columns, booleans, else text.
fn json_cell(t: &DataType, c: &Option<String>) -> serde_json::Value {
    match c {
        None => serde_json::Value::Null,
        Some(s) if numeric(t) => s
            .parse::<serde_json::Number>()
            .map(serde_json::Value::Number)
            .unwrap_or_else(|_| serde_json::Value::String(s.clone())),
        Some(s) if t == &DataType::Boolean => serde_json::Value::Bool(s == "true"),
        Some(s) => serde_json::Value::String(s.clone()),
    }
}

/// CSV with a header; fields with a comma, quote or line break quoted.
/// A text cell (or column name) that a spreadsheet would take for a
/// formula (starting `=`, `+`, `-`, `@`, tab or carriage return) gets a
/// leading `'`: another member's data cannot run in the receiver's
/// spreadsheet. Numbers are written as they are.
pub fn csv(r: &Released) -> Result<String, String> {
    let rows = cells(r)?;
    let text = |s: &str| {
        if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_string()
        }
    };
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let numeric_cols: Vec<bool> = r
        .schema
        .fields()
        .iter()
        .map(|f| numeric(f.data_type()))
        .collect();
    let mut out = r
        .schema
        .fields()
        .iter()
        .map(|f| quote(&text(f.name())))
        .collect::<Vec<_>>()
        .join(",");
    for row in &rows {
        out.push('\n');
        out.push_str(
            &row.iter()
                .zip(&numeric_cols)
                .map(|(c, num)| match c.as_deref() {
                    None => String::new(),
                    Some(v) if *num => quote(v),
                    Some(v) => quote(&text(v)),
                })
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    Ok(out)
}

/// A JSON array of objects, one per row.
pub fn json_objects(r: &Released) -> Result<Vec<serde_json::Value>, String> {
    let fields = r.schema.fields();
    Ok(cells(r)?
        .iter()
        .map(|row| {
            serde_json::Value::Object(
                fields
                    .iter()
                    .zip(row)
                    .map(|(f, c)| (f.name().clone(), json_cell(f.data_type(), c)))
                    .collect(),
            )
        })
        .collect())
}

/// The result as the console reads it: `columns` (name, Arrow type,
/// whether numeric), `rows` (arrays of cells), and, for a result released
/// under differential privacy, `noise` (per noisy column: its scale and the
/// half-width of the interval holding 95% of its noise) and `cost`.
pub fn table_json(r: &Released) -> Result<serde_json::Value, String> {
    let fields = r.schema.fields();
    let rows: Vec<serde_json::Value> = cells(r)?
        .iter()
        .map(|row| {
            serde_json::Value::Array(
                fields
                    .iter()
                    .zip(row)
                    .map(|(f, c)| json_cell(f.data_type(), c))
                    .collect(),
            )
        })
        .collect();
    let meta = r.schema.metadata();
    let parsed = |key: &str| {
        meta.get(key)
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    Ok(serde_json::json!({
        "columns": fields.iter().map(|f| serde_json::json!({
            "name": f.name(),
            "type": f.data_type().to_string(),
            "numeric": numeric(f.data_type()),
        })).collect::<Vec<_>>(),
        "rows": rows,
        "noise": parsed(airlock_protocol::metadata::NOISE),
        "cost": parsed(airlock_protocol::metadata::DP_COST),
    }))
}

/// The result as a Parquet file (its schema metadata, the noise notes
/// among it, kept).
pub fn parquet(r: &Released) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, r.schema.clone(), None)
        .map_err(|e| e.to_string())?;
    for b in &r.batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;
    Ok(buf)
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    fn released() -> Released {
        let schema = Arc::new(Schema::new(vec![
            Field::new("segment", DataType::Utf8, true),
            Field::new("people", DataType::Int64, true),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a,\"b\""),
                    None,
                    Some("=HYPERLINK(1)"),
                ])),
                Arc::new(Int64Array::from(vec![Some(1200), None, Some(-3)])),
            ],
        )
        .expect("batch");
        Released {
            schema,
            batches: vec![b],
        }
    }

    #[test]
    fn csv_quotes_and_json_types_its_cells() {
        let r = released();
        assert_eq!(
            csv(&r).expect("csv"),
            "segment,people\n\"a,\"\"b\"\"\",1200\n,\n'=HYPERLINK(1),-3"
        );
        let t = table_json(&r).expect("json");
        assert_eq!(
            t["rows"],
            serde_json::json!([["a,\"b\"", 1200], [null, null], ["=HYPERLINK(1)", -3]])
        );
        assert_eq!(t["columns"][1]["numeric"], true);
        assert_eq!(t["noise"], serde_json::Value::Null);
        let p = parquet(&r).expect("parquet");
        assert_eq!(&p[..4], b"PAR1");
    }
}
