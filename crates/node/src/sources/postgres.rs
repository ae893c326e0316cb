//! PostgreSQL tables and views, read in place over the node's own
//! read-only connection (sqlx's PostgreSQL driver, the one the hub's
//! store uses).
//!
//! Each scan is one `SELECT` that PostgreSQL runs: only the projected
//! columns, and the filters DataFusion offers (the consent filter, the
//! query's own conditions on the dataset) in its `WHERE` wherever they have
//! the same meaning in both engines. Every value in that SQL is a bound
//! parameter; the only text spliced in is identifiers, quoted by
//! PostgreSQL itself (`quote_ident` of the relation the catalog names, and
//! the columns it reported). A filter is offered back as inexact, so
//! DataFusion applies it again above the scan; what is not pushed (float
//! comparisons, casts, functions) is evaluated by DataFusion only.
//!
//! Reading is total: no value in the table makes a scan fail (infinite
//! dates and timestamps read as null, types without an Arrow counterpart
//! read as text), so which rows a pushed filter keeps cannot be learned
//! from whether the query fails. The session is read-only
//! (`default_transaction_read_only`), and TLS is the connection string's
//! (`sslmode`, `sslrootcert`).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use futures::StreamExt;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::{Arguments, ConnectOptions, Connection, Row};

use super::{OpenError, Source};
use crate::catalog::PostgresUrl;

/// Rows PostgreSQL has sent to this process's PostgreSQL sources, summed
/// over every scan (what the benchmark reports with and without pushdown).
pub static ROWS_READ: AtomicU64 = AtomicU64::new(0);

/// Rows per batch read from PostgreSQL.
const BATCH_ROWS: usize = 8192;

/// A dataset in a PostgreSQL table or view.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    url: PostgresUrl,
    table: String,
    /// Files named in `url` are read against this directory.
    config_dir: PathBuf,
    pushdown: bool,
}

impl PostgresSource {
    /// The relation `table` (`name` or `schema.name`, as PostgreSQL reads
    /// it) of the database `url` names; `pushdown` off reads every row
    /// (the benchmark's baseline).
    pub fn new(
        url: &PostgresUrl,
        table: &str,
        config_dir: &std::path::Path,
        pushdown: bool,
    ) -> Self {
        PostgresSource {
            url: url.clone(),
            table: table.to_string(),
            config_dir: config_dir.to_path_buf(),
            pushdown,
        }
    }

    fn options(&self) -> Result<PgConnectOptions, OpenError> {
        let missing = |what: String| OpenError::new("its credentials are missing", what);
        let text = match &self.url {
            PostgresUrl::Env(env) => std::env::var(env)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| missing(format!("{env} is not set")))?,
            PostgresUrl::File(file) => {
                let path = self.config_dir.join(file);
                std::fs::read_to_string(&path).map_err(|e| {
                    missing(format!(
                        "cannot read the connection file {}: {e}",
                        path.display()
                    ))
                })?
            }
        };
        // The parse error is not passed on: it may quote the string, and
        // the string holds the password.
        let options = PgConnectOptions::from_str(text.trim()).map_err(|_| {
            OpenError::new(
                "its connection string is not valid",
                "not a postgres:// URL (see docs/sources.md)",
            )
        })?;
        Ok(options
            .application_name("airlock-node")
            .options([("default_transaction_read_only", "on")])
            .disable_statement_logging())
    }

    async fn table(&self) -> Result<Arc<dyn TableProvider>, OpenError> {
        let options = self.options()?;
        let mut conn = connect(&options).await?;
        // The relation and its columns, by the name bound as a parameter;
        // PostgreSQL quotes the identifiers it returns.
        let relation: String = sqlx::query_scalar(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = $1::regclass",
        )
        .bind(&self.table)
        .fetch_one(&mut conn)
        .await
        .map_err(classify)?;
        let rows = sqlx::query(
            "SELECT a.attname::text, quote_ident(a.attname), t.typname::text, a.attnotnull \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(&self.table)
        .fetch_all(&mut conn)
        .await
        .map_err(classify)?;
        let _ = conn.close().await;
        let mut columns = Vec::new();
        for r in &rows {
            let name: String = r.try_get(0).map_err(classify)?;
            let quoted: String = r.try_get(1).map_err(classify)?;
            let type_name: String = r.try_get(2).map_err(classify)?;
            let not_null: bool = r.try_get(3).map_err(classify)?;
            columns.push(PgColumn {
                name,
                quoted,
                kind: PgKind::of(&type_name),
                nullable: !not_null,
            });
        }
        if columns.is_empty() {
            return Err(OpenError::new(
                "its relation has no columns",
                format!("{relation} has no columns"),
            ));
        }
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| {
                    // Infinite dates and timestamps read as null.
                    let nullable =
                        c.nullable || matches!(c.kind, PgKind::Date | PgKind::Ts | PgKind::TsTz);
                    Field::new(&c.name, c.kind.data_type(), nullable)
                })
                .collect::<Vec<_>>(),
        ));
        Ok(Arc::new(PgTable {
            options,
            relation,
            columns: Arc::new(columns),
            schema,
            pushdown: self.pushdown,
        }))
    }
}

impl Source for PostgresSource {
    fn open<'a>(
        &'a self,
        _ctx: &'a SessionContext,
    ) -> BoxFuture<'a, Result<Arc<dyn TableProvider>, OpenError>> {
        Box::pin(self.table())
    }
}

async fn connect(options: &PgConnectOptions) -> Result<sqlx::PgConnection, OpenError> {
    match tokio::time::timeout(std::time::Duration::from_secs(10), options.connect()).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(OpenError::new(
            "the node cannot reach its location",
            "no connection within 10 s",
        )),
    }
}

/// The kind of a failure to reach or describe the relation. The detail is
/// sqlx's message, which names the server or the relation, never the
/// password.
fn classify(e: sqlx::Error) -> OpenError {
    let public = match &e {
        sqlx::Error::Database(d) => match d.code().as_deref() {
            // undefined_table, invalid_schema_name
            Some("42P01") | Some("3F000") => "nothing found at its location",
            // invalid_password, invalid_authorization_specification,
            // insufficient_privilege
            Some("28P01") | Some("28000") | Some("42501") => {
                "its database refused the node's credentials"
            }
            // invalid_catalog_name: the database does not exist
            Some("3D000") => "nothing found at its location",
            _ => "its database refused the node's query",
        },
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            "the node cannot reach its location"
        }
        _ => "the node cannot reach its location",
    };
    OpenError::new(public, e.to_string())
}

/// The Arrow-facing kinds of PostgreSQL columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgKind {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    /// `text`, `varchar`, `name`: compared byte-wise under `COLLATE "C"`.
    Text,
    /// Days since 1970-01-01.
    Date,
    /// Microseconds since 1970-01-01, no time zone.
    Ts,
    /// Microseconds since 1970-01-01 UTC.
    TsTz,
    /// Anything else (`numeric`, `char(n)`, `uuid`, arrays, ...): its text
    /// form; never pushed down.
    Other,
}

impl PgKind {
    fn of(type_name: &str) -> PgKind {
        match type_name {
            "bool" => PgKind::Bool,
            "int2" => PgKind::I16,
            "int4" => PgKind::I32,
            "int8" => PgKind::I64,
            "float4" => PgKind::F32,
            "float8" => PgKind::F64,
            "text" | "varchar" | "name" => PgKind::Text,
            "date" => PgKind::Date,
            "timestamp" => PgKind::Ts,
            "timestamptz" => PgKind::TsTz,
            _ => PgKind::Other,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            PgKind::Bool => DataType::Boolean,
            PgKind::I16 => DataType::Int16,
            PgKind::I32 => DataType::Int32,
            PgKind::I64 => DataType::Int64,
            PgKind::F32 => DataType::Float32,
            PgKind::F64 => DataType::Float64,
            PgKind::Text | PgKind::Other => DataType::Utf8,
            PgKind::Date => DataType::Date32,
            PgKind::Ts => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgKind::TsTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// The select-list expression reading column `q` (quoted) as this kind:
    /// total, so no stored value makes it fail.
    fn select(self, q: &str) -> String {
        match self {
            PgKind::Date => {
                format!("CASE WHEN isfinite({q}) THEN ({q} - DATE '1970-01-01') END")
            }
            PgKind::Ts => format!(
                "CASE WHEN isfinite({q}) THEN (EXTRACT(EPOCH FROM {q}) * 1000000)::int8 END"
            ),
            PgKind::TsTz => format!(
                "CASE WHEN isfinite({q}) THEN (EXTRACT(EPOCH FROM {q}) * 1000000)::int8 END"
            ),
            PgKind::Other => format!("{q}::text"),
            _ => q.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
struct PgColumn {
    name: String,
    quoted: String,
    kind: PgKind,
    nullable: bool,
}

/// One relation, as DataFusion sees it.
#[derive(Debug)]
struct PgTable {
    options: PgConnectOptions,
    /// `schema.name`, quoted by PostgreSQL.
    relation: String,
    columns: Arc<Vec<PgColumn>>,
    schema: SchemaRef,
    pushdown: bool,
}

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
enum Param {
    Bool(bool),
    I64(i64),
    I32(i32),
    Text(String),
}

/// The `WHERE` text of filter `e` over `columns`, its values appended to
/// `params` (`$1`, `$2`, ... in order), or `None` where PostgreSQL might
/// not mean what DataFusion means.
fn filter_sql(e: &Expr, columns: &[PgColumn], params: &mut Vec<Param>) -> Option<String> {
    let column = |e: &Expr| -> Option<&PgColumn> {
        match e {
            Expr::Column(c) => columns.iter().find(|k| k.name == c.name),
            _ => None,
        }
    };
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And | Operator::Or => {
                let mark = params.len();
                let l = filter_sql(left, columns, params);
                let r = l.as_ref().and_then(|_| filter_sql(right, columns, params));
                match (l, r) {
                    (Some(l), Some(r)) => {
                        let word = if *op == Operator::And { "AND" } else { "OR" };
                        Some(format!("({l} {word} {r})"))
                    }
                    _ => {
                        params.truncate(mark);
                        None
                    }
                }
            }
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq => {
                let (c, value, op) = match (column(left), column(right)) {
                    (Some(c), None) => (c, right.as_ref(), *op),
                    (None, Some(c)) => (c, left.as_ref(), op.swap()?),
                    _ => return None,
                };
                let Expr::Literal(value, _) = value else {
                    return None;
                };
                let sql_op = match op {
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    Operator::GtEq => ">=",
                    _ => return None,
                };
                let (lhs, param, cast) = comparable(c, value)?;
                params.push(param);
                Some(format!("{lhs} {sql_op} ${}{cast}", params.len()))
            }
            _ => None,
        },
        Expr::Not(inner) => {
            let mark = params.len();
            match filter_sql(inner, columns, params) {
                Some(s) => Some(format!("(NOT {s})")),
                None => {
                    params.truncate(mark);
                    None
                }
            }
        }
        Expr::IsNull(inner) => column(inner).map(|c| format!("({} IS NULL)", c.quoted)),
        Expr::IsNotNull(inner) => column(inner).map(|c| format!("({} IS NOT NULL)", c.quoted)),
        Expr::IsTrue(inner)
        | Expr::IsFalse(inner)
        | Expr::IsNotTrue(inner)
        | Expr::IsNotFalse(inner) => {
            let c = column(inner).filter(|c| c.kind == PgKind::Bool)?;
            let test = match e {
                Expr::IsTrue(_) => "IS TRUE",
                Expr::IsFalse(_) => "IS FALSE",
                Expr::IsNotTrue(_) => "IS NOT TRUE",
                _ => "IS NOT FALSE",
            };
            Some(format!("({} {test})", c.quoted))
        }
        Expr::Column(_) => column(e)
            .filter(|c| c.kind == PgKind::Bool)
            .map(|c| c.quoted.clone()),
        Expr::InList(list) => {
            let c = column(&list.expr)?;
            let mut bound = Vec::new();
            let mut lhs = String::new();
            let mut cast = "";
            for item in &list.list {
                let Expr::Literal(v, _) = item else {
                    return None;
                };
                let (l, p, k) = comparable(c, v)?;
                lhs = l;
                cast = k;
                bound.push(p);
            }
            if bound.is_empty() {
                return None;
            }
            let start = params.len();
            let marks: Vec<String> = (0..bound.len())
                .map(|i| format!("${}{cast}", start + i + 1))
                .collect();
            params.extend(bound);
            let not = if list.negated { "NOT " } else { "" };
            Some(format!("({lhs} {not}IN ({}))", marks.join(", ")))
        }
        _ => None,
    }
}

/// How column `c` compares with the non-null literal `v` in PostgreSQL
/// with DataFusion's meaning: the left side, the bound value and its cast.
fn comparable(c: &PgColumn, v: &ScalarValue) -> Option<(String, Param, &'static str)> {
    let q = &c.quoted;
    match c.kind {
        PgKind::I16 | PgKind::I32 | PgKind::I64 => {
            let n: i64 = match v {
                ScalarValue::Int8(Some(n)) => i64::from(*n),
                ScalarValue::Int16(Some(n)) => i64::from(*n),
                ScalarValue::Int32(Some(n)) => i64::from(*n),
                ScalarValue::Int64(Some(n)) => *n,
                ScalarValue::UInt8(Some(n)) => i64::from(*n),
                ScalarValue::UInt16(Some(n)) => i64::from(*n),
                ScalarValue::UInt32(Some(n)) => i64::from(*n),
                ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok()?,
                _ => return None,
            };
            Some((q.clone(), Param::I64(n), "::int8"))
        }
        PgKind::Bool => match v {
            ScalarValue::Boolean(Some(b)) => Some((q.clone(), Param::Bool(*b), "::bool")),
            _ => None,
        },
        PgKind::Text => match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => {
                // A NUL cannot be sent to PostgreSQL; DataFusion decides.
                if s.contains('\0') {
                    return None;
                }
                Some((
                    format!("{q} COLLATE \"C\""),
                    Param::Text(s.clone()),
                    "::text",
                ))
            }
            _ => None,
        },
        PgKind::Date => match v {
            // Within PostgreSQL's date range, so the bound value is valid.
            ScalarValue::Date32(Some(d)) if (-2_400_000..=2_000_000_000).contains(d) => Some((
                format!("CASE WHEN isfinite({q}) THEN ({q} - DATE '1970-01-01') END"),
                Param::I32(*d),
                "::int4",
            )),
            _ => None,
        },
        // Floats (-0.0, NaN), timestamps (time zones) and text forms of
        // other types do not compare the same way in both engines.
        _ => None,
    }
}

#[async_trait::async_trait]
impl TableProvider for PgTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.pushdown && filter_sql(f, &self.columns, &mut Vec::new()).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.columns.len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&indices)?);
        let list: Vec<String> = indices
            .iter()
            .map(|&i| {
                let c = &self.columns[i];
                c.kind.select(&c.quoted)
            })
            .collect();
        // With no column asked for (COUNT(*)), a constant per row.
        let select = if list.is_empty() {
            "1".to_string()
        } else {
            list.join(", ")
        };
        let mut params = Vec::new();
        let mut conditions = Vec::new();
        if self.pushdown {
            for f in filters {
                let mark = params.len();
                match filter_sql(f, &self.columns, &mut params) {
                    Some(s) => conditions.push(s),
                    None => params.truncate(mark),
                }
            }
        }
        let mut sql = format!("SELECT {select} FROM {}", self.relation);
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        if let Some(n) = limit.filter(|_| self.pushdown) {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let kinds = indices.iter().map(|&i| self.columns[i].kind).collect();
        let part = Arc::new(PgScan {
            options: self.options.clone(),
            sql,
            params,
            schema: schema.clone(),
            kinds,
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![part],
            None,
            Vec::new(),
            false,
            None,
        )?))
    }
}

/// One scan's statement.
#[derive(Debug)]
struct PgScan {
    options: PgConnectOptions,
    sql: String,
    params: Vec<Param>,
    schema: SchemaRef,
    kinds: Vec<PgKind>,
}

impl PartitionStream for PgScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let options = self.options.clone();
        let sql = self.sql.clone();
        let params = self.params.clone();
        let schema = self.schema.clone();
        let kinds = self.kinds.clone();
        builder.spawn(async move {
            let ext = |e: sqlx::Error| {
                DataFusionError::Execution(format!(
                    "reading from PostgreSQL: {}",
                    classify(e).public
                ))
            };
            let mut conn = connect(&options).await.map_err(|e| {
                DataFusionError::Execution(format!("reading from PostgreSQL: {}", e.public))
            })?;
            let mut args = PgArguments::default();
            for p in &params {
                let r = match p {
                    Param::Bool(b) => args.add(*b),
                    Param::I64(n) => args.add(*n),
                    Param::I32(n) => args.add(*n),
                    Param::Text(s) => args.add(s.clone()),
                };
                r.map_err(|e| DataFusionError::Execution(format!("binding a value: {e}")))?;
            }
            let mut batch = Batch::new(&kinds);
            {
                let mut rows = sqlx::query_with(&sql, args).fetch(&mut conn);
                while let Some(row) = rows.next().await {
                    batch.push(&row.map_err(ext)?).map_err(ext)?;
                    if batch.len == BATCH_ROWS {
                        let full = std::mem::replace(&mut batch, Batch::new(&kinds));
                        if tx.send(full.finish(&schema)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            if batch.len > 0 {
                let _ = tx.send(batch.finish(&schema)).await;
            }
            let _ = conn.close().await;
            Ok(())
        });
        builder.build()
    }
}

/// Rows being gathered into one record batch.
struct Batch {
    builders: Vec<Box<dyn ArrayBuilder>>,
    kinds: Vec<PgKind>,
    len: usize,
}

impl Batch {
    fn new(kinds: &[PgKind]) -> Batch {
        let builders = kinds
            .iter()
            .map(|k| -> Box<dyn ArrayBuilder> {
                match k {
                    PgKind::Bool => Box::new(BooleanBuilder::new()),
                    PgKind::I16 => Box::new(Int16Builder::new()),
                    PgKind::I32 => Box::new(Int32Builder::new()),
                    PgKind::I64 => Box::new(Int64Builder::new()),
                    PgKind::F32 => Box::new(Float32Builder::new()),
                    PgKind::F64 => Box::new(Float64Builder::new()),
                    PgKind::Text | PgKind::Other => Box::new(StringBuilder::new()),
                    PgKind::Date => Box::new(Date32Builder::new()),
                    PgKind::Ts => Box::new(TimestampMicrosecondBuilder::new()),
                    PgKind::TsTz => {
                        Box::new(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                    }
                }
            })
            .collect();
        Batch {
            builders,
            kinds: kinds.to_vec(),
            len: 0,
        }
    }

    fn push(&mut self, row: &PgRow) -> Result<(), sqlx::Error> {
        fn put<B: 'static>(b: &mut Box<dyn ArrayBuilder>) -> &mut B {
            b.as_any_mut()
                .downcast_mut::<B>()
                .expect("builder made for this kind")
        }
        for (i, (kind, b)) in self.kinds.iter().zip(self.builders.iter_mut()).enumerate() {
            match kind {
                PgKind::Bool => {
                    put::<BooleanBuilder>(b).append_option(row.try_get::<Option<bool>, _>(i)?)
                }
                PgKind::I16 => {
                    put::<Int16Builder>(b).append_option(row.try_get::<Option<i16>, _>(i)?)
                }
                PgKind::I32 | PgKind::Date => {
                    let v = row.try_get::<Option<i32>, _>(i)?;
                    if *kind == PgKind::Date {
                        put::<Date32Builder>(b).append_option(v)
                    } else {
                        put::<Int32Builder>(b).append_option(v)
                    }
                }
                PgKind::I64 => {
                    put::<Int64Builder>(b).append_option(row.try_get::<Option<i64>, _>(i)?)
                }
                PgKind::F32 => {
                    put::<Float32Builder>(b).append_option(row.try_get::<Option<f32>, _>(i)?)
                }
                PgKind::F64 => {
                    put::<Float64Builder>(b).append_option(row.try_get::<Option<f64>, _>(i)?)
                }
                PgKind::Text | PgKind::Other => {
                    put::<StringBuilder>(b).append_option(row.try_get::<Option<String>, _>(i)?)
                }
                PgKind::Ts | PgKind::TsTz => put::<TimestampMicrosecondBuilder>(b)
                    .append_option(row.try_get::<Option<i64>, _>(i)?),
            }
        }
        self.len += 1;
        Ok(())
    }

    fn finish(mut self, schema: &SchemaRef) -> DfResult<RecordBatch> {
        ROWS_READ.fetch_add(self.len as u64, Ordering::Relaxed);
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new()
            .with_row_count(Some(self.len));
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &options,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn columns() -> Vec<PgColumn> {
        [
            ("email", PgKind::Text),
            ("age", PgKind::I32),
            ("consent", PgKind::Bool),
            ("score", PgKind::F64),
            ("day", PgKind::Date),
            ("amount", PgKind::Other),
        ]
        .into_iter()
        .map(|(n, k)| PgColumn {
            name: n.to_string(),
            quoted: n.to_string(),
            kind: k,
            nullable: true,
        })
        .collect()
    }

    #[test]
    fn filters_are_pushed_with_bound_values_where_both_engines_agree() {
        let cols = columns();
        let mut p = Vec::new();
        let e = col("consent")
            .eq(lit(true))
            .and(col("age").gt_eq(lit(30i64)));
        assert_eq!(
            filter_sql(&e, &cols, &mut p).as_deref(),
            Some("(consent = $1::bool AND age >= $2::int8)")
        );
        assert_eq!(p, vec![Param::Bool(true), Param::I64(30)]);
        // A value never appears in the text, quotes and all.
        let mut p = Vec::new();
        let e = col("email").eq(lit("o'brien@example.com"));
        let sql = filter_sql(&e, &cols, &mut p).expect("pushed");
        assert!(!sql.contains("brien"), "{sql}");
        assert_eq!(p, vec![Param::Text("o'brien@example.com".into())]);
        // Literal on the left: the operator turns round.
        let mut p = Vec::new();
        let e = lit(40i64).gt(col("age"));
        assert_eq!(
            filter_sql(&e, &cols, &mut p).as_deref(),
            Some("age < $1::int8")
        );
        // IN lists, NULL tests, NOT.
        let mut p = Vec::new();
        let e = col("age").in_list(vec![lit(1i64), lit(2i64)], true);
        assert_eq!(
            filter_sql(&e, &cols, &mut p).as_deref(),
            Some("(age NOT IN ($1::int8, $2::int8))")
        );
        let mut p = Vec::new();
        assert_eq!(
            filter_sql(
                &datafusion::prelude::not(col("email").is_null()),
                &cols,
                &mut p
            )
            .as_deref(),
            Some("(NOT (email IS NULL))")
        );
    }

    #[test]
    fn filters_whose_meaning_could_differ_are_left_to_datafusion() {
        let cols = columns();
        for e in [
            col("score").lt(lit(0.0f64)),
            col("amount").eq(lit("1.0")),
            col("age").eq(lit(ScalarValue::Int64(None))),
            col("age").in_list(vec![lit(1i64), lit(ScalarValue::Int64(None))], false),
            col("email").eq(lit("a\0b")),
            col("age").eq(col("age")),
            datafusion::functions::expr_fn::abs(col("age")).gt(lit(3i64)),
            col("age").eq(lit(1i64)).or(col("score").gt(lit(1.0f64))),
            col("day").eq(lit(ScalarValue::Date32(Some(i32::MIN)))),
            col("age").eq(lit(u64::MAX)),
        ] {
            let mut p = Vec::new();
            assert_eq!(filter_sql(&e, &cols, &mut p), None, "{e}");
            assert!(p.is_empty(), "{e}: {p:?}");
        }
    }
}
