//! Realistic sample data for the demo and the benchmark.
//!
//! The provider `publisher` has an audience (one row per person); the
//! consumer `advertiser` has purchases (about 2 rows per 10 audience rows).
//! About half of the advertiser's customers are in the audience, and some
//! customers have several orders. Generation is seeded, so the same `rows`
//! always gives the same files.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Date32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FIRST: &[&str] = &[
    "ana", "ben", "chloe", "david", "emma", "farid", "grace", "hugo", "ines", "jack", "kira",
    "liam", "maya", "noah", "olga", "pablo", "quinn", "rosa", "sami", "tara", "ugo", "vera", "wen",
    "xavi", "yara", "zoe",
];
const LAST: &[&str] = &[
    "smith", "garcia", "muller", "rossi", "martin", "kowalski", "nguyen", "silva", "jensen",
    "dubois", "novak", "tanaka", "okafor", "haddad", "larsen", "moreau",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example",
    "inbox.example",
    "post.example",
];
/// Segments with their relative weights.
pub const SEGMENTS: &[(&str, u32)] = &[
    ("sports", 14),
    ("travel", 12),
    ("tech", 13),
    ("fashion", 11),
    ("food", 10),
    ("auto", 8),
    ("finance", 9),
    ("parenting", 8),
    ("gaming", 9),
    ("beauty", 6),
];
const REGIONS: &[&str] = &[
    "north",
    "south",
    "east",
    "west",
    "central",
    "coast",
    "highlands",
    "islands",
];
const AGE_BANDS: &[&str] = &["18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
/// Purchase categories with their typical basket in cents.
pub const CATEGORIES: &[(&str, i64)] = &[
    ("electronics", 18_000),
    ("apparel", 6_000),
    ("home", 9_000),
    ("beauty", 3_500),
    ("grocery", 4_500),
    ("sports", 7_500),
];
const BATCH: usize = 200_000;
/// Days since the epoch of 2025-01-01.
const DAY0: i32 = 20_089;

/// The email of person `i` (audience people are `0..rows`, others above).
pub fn email(i: u64) -> String {
    let f = FIRST[(i % FIRST.len() as u64) as usize];
    let l = LAST[((i / 7) % LAST.len() as u64) as usize];
    let d = DOMAINS[((i / 3) % DOMAINS.len() as u64) as usize];
    format!("{f}.{l}{i}@{d}")
}

fn weighted<'a>(rng: &mut StdRng, items: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total);
    for (name, w) in items {
        if x < *w {
            return name;
        }
        x -= w;
    }
    items[0].0
}

fn writer(path: &Path, schema: &SchemaRef) -> std::io::Result<ArrowWriter<File>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    ArrowWriter::try_new(File::create(path)?, schema.clone(), Some(props))
        .map_err(std::io::Error::other)
}

fn audience_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("age_band", DataType::Utf8, false),
        Field::new("consent", DataType::Boolean, false),
    ]))
}

fn purchases_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, false),
        Field::new("order_id", DataType::Int64, false),
        Field::new("amount_cents", DataType::Int64, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("day", DataType::Date32, false),
    ]))
}

/// Purchase columns being accumulated into one batch.
#[derive(Default)]
struct Orders(Vec<String>, Vec<i64>, Vec<i64>, Vec<&'static str>, Vec<i32>);

/// Row counts written.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Audience rows.
    pub audience: usize,
    /// Purchase rows.
    pub purchases: usize,
    /// Distinct advertiser customers.
    pub customers: usize,
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Writes `audience.parquet` and `purchases.parquet` into `dir`.
pub fn write_demo_data(dir: &Path, rows: usize) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(0x41_49_52_4c_4f_43_4b);
    let schema = audience_schema();
    let mut w = writer(&dir.join("audience.parquet"), &schema)?;
    let mut start = 0;
    while start < rows {
        let n = BATCH.min(rows - start);
        let ids = start as u64..(start + n) as u64;
        let emails: StringArray = ids.clone().map(|i| Some(email(i))).collect();
        let segments: StringArray = (0..n).map(|_| Some(weighted(&mut rng, SEGMENTS))).collect();
        let regions: StringArray = (0..n)
            .map(|_| Some(REGIONS[rng.gen_range(0..REGIONS.len())]))
            .collect();
        let ages: StringArray = (0..n)
            .map(|_| Some(AGE_BANDS[rng.gen_range(0..AGE_BANDS.len())]))
            .collect();
        let consent: BooleanArray = (0..n).map(|_| Some(rng.gen_bool(0.92))).collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(emails),
            Arc::new(segments),
            Arc::new(regions),
            Arc::new(ages),
            Arc::new(consent),
        ];
        w.write(&RecordBatch::try_new(schema.clone(), cols).map_err(io)?)
            .map_err(io)?;
        start += n;
    }
    w.close().map_err(io)?;

    // Customers: ~0.12 x rows people with 1 + geometric orders (mean ~1.67),
    // so about 2 purchase rows per 10 audience rows. Even customers are
    // audience people spread over the whole audience; odd ones are not in it.
    let customers = (rows * 12 / 100).max(1);
    let half = customers.div_ceil(2) as u64;
    let stride = (rows as u64 / half.max(1)).max(1);
    let schema = purchases_schema();
    let mut w = writer(&dir.join("purchases.parquet"), &schema)?;
    let mut order_id: i64 = 1_000_000;
    let mut total = 0;
    let mut buf = Orders::default();
    for c in 0..customers as u64 {
        let person = if c % 2 == 0 && rows > 0 {
            ((c / 2) * stride + rng.gen_range(0..stride)) % rows as u64
        } else {
            rows as u64 + c
        };
        let favourite = rng.gen_range(0..CATEGORIES.len());
        let mut orders = 1;
        while orders < 10 && rng.gen_bool(0.4) {
            orders += 1;
        }
        for _ in 0..orders {
            let cat = if rng.gen_bool(0.6) {
                favourite
            } else {
                rng.gen_range(0..CATEGORIES.len())
            };
            let (name, basket) = CATEGORIES[cat];
            let factor: f64 = rng.gen_range(0.2..2.5);
            buf.0.push(email(person));
            buf.1.push(order_id);
            buf.2.push(((basket as f64) * factor) as i64 + 99);
            buf.3.push(name);
            buf.4.push(DAY0 + rng.gen_range(0..365));
            order_id += 1;
        }
        if buf.0.len() >= BATCH || c + 1 == customers as u64 {
            total += buf.0.len();
            let b = std::mem::take(&mut buf);
            let cols: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(b.0)),
                Arc::new(Int64Array::from(b.1)),
                Arc::new(Int64Array::from(b.2)),
                Arc::new(StringArray::from(b.3)),
                Arc::new(Date32Array::from(b.4)),
            ];
            w.write(&RecordBatch::try_new(schema.clone(), cols).map_err(io)?)
                .map_err(io)?;
        }
    }
    w.close().map_err(io)?;
    Ok(Written {
        audience: rows,
        purchases: total,
        customers,
    })
}

/// The demo collaboration file (k = 50 on both tables), as
/// `examples/demo/collaboration.toml` holds it: the one copy the demo and
/// the guard's own tests share.
pub const DEMO_COLLABORATION: &str = include_str!("../../../examples/demo/collaboration.toml");

/// The demo's catalog (both members' datasets, as local Parquet files).
pub const DEMO_CATALOG: &str = include_str!("../../../examples/demo/catalog.toml");

/// The demo collaboration file; `join_required` sets the audience's rule.
pub fn collaboration_toml(join_required: bool) -> String {
    if join_required {
        DEMO_COLLABORATION.to_string()
    } else {
        DEMO_COLLABORATION.replacen("join_required = true", "join_required = false", 1)
    }
}

/// The demo collaboration under differential privacy: the same tables,
/// each with a DP rule (epsilon 1 per query, at most 3 rows and 3 groups per
/// person, public segments and categories, partition selection for other
/// dimensions), and a collaboration budget of epsilon 3.
pub fn collaboration_toml_dp() -> String {
    let quoted = |names: Vec<&str>| {
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let segments = quoted(SEGMENTS.iter().map(|(s, _)| *s).collect());
    let categories = quoted(CATEGORIES.iter().map(|(c, _)| *c).collect());
    let dp = "epsilon = 1.0, delta = 1e-7, max_rows_per_identity = 3, max_groups_per_identity = 3";
    collaboration_toml(true)
        .replace(
            "min_distinct_identities = 50, join_required = true }",
            &format!(
                "min_distinct_identities = 50, join_required = true, differential_privacy = {{ {dp}, public_keys = {{ segment = [{segments}] }} }} }}"
            ),
        )
        .replace(
            "rule = { type = \"aggregation\", min_distinct_identities = 50 }",
            &format!(
                "rule = {{ type = \"aggregation\", min_distinct_identities = 50, differential_privacy = {{ {dp}, bounds = {{ amount_cents = [0, 30000] }}, public_keys = {{ category = [{categories}] }} }} }}"
            ),
        )
        .replacen(
            "\n[[members]]",
            "\n# Differential privacy: every query reading the tables below costs epsilon 1\n# (their rules), from a collaboration budget of epsilon 3.\n[privacy]\nepsilon = 3.0\ndelta = 1e-6\n\n[[members]]",
            1,
        )
}

/// The demo collaboration in crypto mode: the same tables and rules, no
/// executor; both members may ask (the publisher about its segments, the
/// advertiser about its categories), and the answers come from private set
/// intersection between their two nodes.
pub fn collaboration_toml_crypto() -> String {
    collaboration_toml(true)
        .replacen(
            "purposes = [\"measurement\"]",
            "purposes = [\"measurement\"]\n# No executor: the two nodes compute overlaps and sums by private set intersection.\nmode = \"crypto\"",
            1,
        )
        .replacen(
            "name = \"publisher\"\nabilities = [\"provide\"]",
            "name = \"publisher\"\nabilities = [\"query\", \"receive\", \"provide\"]",
            1,
        )
}

/// Writes the demo data, the collaboration file, its catalog and a fresh
/// collaboration secret.
pub fn write_demo(dir: &Path, rows: usize, join_required: bool) -> Result<Written, String> {
    let written = write_demo_data(dir, rows).map_err(|e| format!("writing sample data: {e}"))?;
    std::fs::write(
        dir.join("collaboration.toml"),
        collaboration_toml(join_required),
    )
    .map_err(|e| format!("writing collaboration.toml: {e}"))?;
    std::fs::write(dir.join(airlock_node::catalog::CATALOG_FILE), DEMO_CATALOG)
        .map_err(|e| format!("writing catalog.toml: {e}"))?;
    let secret = airlock_crypto::CollaborationSecret::generate().map_err(|e| e.to_string())?;
    std::fs::write(dir.join("collaboration.key"), secret.to_hex() + "\n")
        .map_err(|e| format!("writing collaboration.key: {e}"))?;
    Ok(written)
}
