//! The hub's Arrow Flight SQL endpoint: SQL clients (ADBC for Python, R,
//! Go and C; the Flight SQL JDBC driver for Java and BI tools) query a
//! collaboration like a database. `docs/clients.md` is the user's guide.
//!
//! Nothing here decides a policy. A statement becomes the same
//! [`crate::api::QueryRequest`] a REST call sends and goes through
//! `HubState::submit` (abilities, the member's places, guard, budget,
//! nodes, release, audit); the released result is read through
//! `HubState::fetch_result` (the `receive` ability, retention, the
//! fetch's audit entry); errors are the REST API's [`ApiError`]s, mapped
//! onto gRPC codes by [`status_of`]. What this file adds is the protocol:
//!
//! - **Authentication**: the member's token as `authorization: Bearer
//!   TOKEN` on every call, or as the password of a basic-auth `Handshake`
//!   (the user name is ignored), which answers with the bearer header the
//!   client then sends.
//! - **Names**: the catalog is `airlock` (one), each collaboration the
//!   member belongs to is a schema, its configured tables are the tables
//!   with their configured columns only. A statement's table names may be
//!   qualified (`collab.table` or `airlock.collab.table`): the qualifier
//!   picks the collaboration and is removed before the SQL is checked
//!   ([`resolve`]). Unqualified names read the collaboration of the
//!   `x-airlock-collaboration` header, else the member's only one.
//! - **Statements** run when the client asks for their `FlightInfo`, which
//!   returns once the query has ended (released, refused or failed); its
//!   one endpoint's ticket names the released query, read by `DoGet`. A
//!   client that cancels the call (or disconnects) cancels the query.
//! - **Prepared statements**: `EXECUTE template` (optionally
//!   `collab.template`) names a template; its parameters are bound as one
//!   row of values (by column name when every name is a parameter's, else
//!   in the order of the template's parameter names) and sent as values,
//!   never spliced into SQL. Any other SQL may be prepared and run with no
//!   parameters (JDBC prepares everything).
//! - **Refused**: updates, bulk ingestion, Substrait plans, transactions
//!   and savepoints: Airlock releases aggregates and changes no data.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use airlock_policy::Collaboration;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest,
    ActionEndSavepointRequest, ActionEndTransactionRequest, Any, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementSubstraitPlan, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, PollInfo,
    Ticket,
};
use axum::http::StatusCode;
use base64::Engine as _;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::api::{ErrorCode, QueryRequest};

use super::state::{not_found, ApiError, Shared};

/// The one catalog; each collaboration is a schema in it.
pub const CATALOG: &str = "airlock";

/// The header naming the collaboration of unqualified table names.
pub const COLLABORATION_HEADER: &str = "x-airlock-collaboration";

/// The header (and trailer) of an error carrying its machine-readable
/// form: the REST API's error body as JSON (`code`, `error`, and for a
/// refusal `refusal` and `node`).
pub const ERROR_HEADER: &str = "x-airlock-error";

/// Prepared statements one member may hold open; creating one more closes
/// its oldest.
pub const MAX_PREPARED_PER_MEMBER: usize = 64;

/// The Flight SQL service over the hub's state.
pub struct FlightSql {
    s: Shared,
    prepared: Mutex<Vec<(String, PreparedStatement)>>,
    info: SqlInfoData,
}

/// What a prepared statement holds until it is closed.
#[derive(Debug, Clone)]
struct PreparedStatement {
    member: String,
    collab: String,
    what: Prepared,
}

#[derive(Debug, Clone)]
enum Prepared {
    /// SQL, with its qualifiers removed.
    Sql(String),
    /// A run of a template, and the values bound so far.
    Template {
        name: String,
        params: BTreeMap<String, String>,
    },
}

impl Prepared {
    /// The query it asks, as REST would send it.
    fn spec(self) -> QueryRequest {
        match self {
            Prepared::Sql(sql) => QueryRequest::sql(sql),
            Prepared::Template { name, params } => QueryRequest::template(name, params),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl FlightSql {
    /// The service over `s`.
    pub fn new(s: Shared) -> Result<Self, String> {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "Airlock");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        // SqlSupportedTransaction::None.
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        b.append(SqlInfo::FlightSqlServerCancel, true);
        b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlTransactionsSupported, false);
        Ok(FlightSql {
            s,
            prepared: Mutex::new(Vec::new()),
            info: b.build().map_err(|e| e.to_string())?,
        })
    }

    /// The member of a call's `authorization` header (bearer, or basic
    /// with the token as the password).
    async fn member(&self, md: &MetadataMap) -> Result<String, Status> {
        let token = token_of(md).ok_or_else(|| status_of(super::state::unauthorized()))?;
        self.s.member_of_token(&token).await.map_err(status_of)
    }

    /// The collaborations `member` belongs to, by name.
    async fn collaborations(&self, member: &str) -> Result<Vec<Collaboration>, Status> {
        let recs = self
            .s
            .store
            .collaborations()
            .await
            .map_err(|e| status_of(e.into()))?;
        Ok(recs
            .into_iter()
            .filter_map(|r| Collaboration::from_toml(&r.toml, &r.name).ok())
            .filter(|c| c.member(member).is_some())
            .collect())
    }

    /// The collaboration a statement's unqualified names read: the
    /// header's, else the member's only one.
    async fn default_collab(&self, member: &str, md: &MetadataMap) -> Result<String, Status> {
        if let Some(h) = md.get(COLLABORATION_HEADER) {
            let name = h
                .to_str()
                .map_err(|_| bad(format!("{COLLABORATION_HEADER} is not text")))?;
            return Ok(name.trim().to_string());
        }
        let mine = self.collaborations(member).await?;
        match mine.as_slice() {
            [one] => Ok(one.name().to_string()),
            [] => Err(status_of(not_found("collaboration"))),
            many => Err(bad(format!(
                "'{member}' belongs to {} collaborations ({}): qualify the table names (collaboration.table) or name one in the {COLLABORATION_HEADER} header",
                many.len(),
                many.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// What `sql` asks, and of which collaboration.
    async fn statement(
        &self,
        member: &str,
        md: &MetadataMap,
        sql: &str,
    ) -> Result<(String, Prepared), Status> {
        // The guard's text limits first, then the parse on a thread with
        // the planner's stack: a statement nested a million levels deep is
        // refused or dropped there, never on this one (red team).
        self.s
            .limits
            .query
            .guard()
            .check_sql(sql)
            .map_err(|r| refusal_status(&r, None))?;
        let text = sql.to_string();
        let parsed = tokio::task::spawn_blocking(move || {
            std::thread::Builder::new()
                .name("airlock-resolve".into())
                .stack_size(airlock_guard::PLANNING_STACK)
                .spawn(move || resolve(&text))
                .map_err(|e| format!("cannot start the parser: {e}"))?
                .join()
                .map_err(|_| "the parser failed".to_string())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::internal)?;
        let (named, what) = parsed.map_err(bad)?;
        let collab = match named {
            Some(c) => c,
            None => self.default_collab(member, md).await?,
        };
        // The same 404 for "no such" and "not yours", before anything runs.
        self.s.visible(member, &collab).await.map_err(status_of)?;
        Ok((collab, what))
    }

    /// Runs `spec` on `collab` as `member` until it ends; the released
    /// query's `FlightInfo`, or the refusal or failure as a status.
    async fn execute(
        &self,
        member: &str,
        collab: &str,
        spec: &QueryRequest,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        // The submit and the run go on in tasks of their own; this call
        // waits for them. Dropped (the client cancelled the call or went
        // away), it cancels the query, whenever that comes.
        let watch = Arc::new(Mutex::new(Watch::default()));
        let cancel = CancelOnDrop {
            s: self.s.clone(),
            watch: watch.clone(),
        };
        let (s, m, c, spec) = (
            self.s.clone(),
            member.to_string(),
            collab.to_string(),
            spec.clone(),
        );
        let task = tokio::spawn(async move {
            let (q, running) = s.submit(&m, &c, &spec).await?;
            let dropped = match watch.lock() {
                Ok(mut w) => {
                    w.id = Some(q.id.clone());
                    w.dropped
                }
                Err(_) => false,
            };
            if dropped {
                s.cancel(&q.id);
            }
            if let Some(run) = running {
                let _ = run.await;
            }
            Ok::<_, ApiError>(q)
        });
        let q = task
            .await
            .map_err(|e| Status::internal(format!("the query's task stopped: {e}")))?
            .map_err(status_of)?;
        drop(cancel);
        Ok(Response::new(self.ended(member, &q.id, descriptor).await?))
    }

    /// The `FlightInfo` of query `id` of `member`, which has ended: its
    /// released result's schema, rows and ticket, or its refusal or
    /// failure as a status.
    async fn ended(
        &self,
        member: &str,
        id: &str,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let q = self
            .s
            .store
            .query(id)
            .await
            .map_err(|e| status_of(e.into()))?
            .ok_or_else(|| status_of(not_found("query")))?;
        let view = self.s.view(&q);
        if let Some(e) = ended_badly(&view) {
            return Err(e);
        }
        if view.delivery.is_some() {
            return Err(Status::failed_precondition(
                "the result was delivered to the querier's node, not kept by the hub",
            ));
        }
        // Its schema and row count are the result's: shown only to a
        // member who may read it (as DoGet and REST's fetch require).
        let (_, c) = self.s.visible(member, &q.collab).await.map_err(status_of)?;
        super::state::require(&c, member, airlock_policy::Ability::Receive, "read results")
            .map_err(status_of)?;
        // The schema the result stream will have: read from the result.
        let bytes = self.s.fetch_schema(&q.id).await.map_err(status_of)?;
        let schema = result_schema(bytes)?;
        let ticket = TicketStatementQuery {
            statement_handle: q.id.clone().into_bytes().into(),
        };
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))
            .map(|info| {
                info.with_endpoint(FlightEndpoint::new().with_ticket(Ticket {
                    ticket: ticket.as_any().encode_to_vec().into(),
                }))
                .with_descriptor(descriptor)
                .with_total_records(q.rows.unwrap_or(-1))
            })
    }

    /// What a statement or prepared statement command asks: the member,
    /// the collaboration and the query.
    async fn spec_of(
        &self,
        md: &MetadataMap,
        cmd: &[u8],
    ) -> Result<(String, String, QueryRequest), Status> {
        use arrow_flight::sql::Command;
        let m = self.member(md).await?;
        let any = Any::decode(cmd).map_err(|e| bad(e.to_string()))?;
        let (collab, what) = match Command::try_from(any).map_err(|e| bad(e.to_string()))? {
            Command::CommandStatementQuery(q) => self.statement(&m, md, &q.query).await?,
            Command::CommandPreparedStatementQuery(p) => {
                let p = self.stored(&p.prepared_statement_handle, &m)?;
                (p.collab, p.what)
            }
            other => {
                return Err(bad(format!(
                    "PollFlightInfo runs statements and prepared statements, not {}",
                    other.type_url()
                )))
            }
        };
        let spec = what.spec();
        Ok((m, collab, spec))
    }

    /// `PollFlightInfo`: the first poll (a statement or prepared statement)
    /// submits the query and answers at once with a descriptor to poll
    /// again; each later poll waits up to a second, then answers with the
    /// query's progress (fragments done / sent), or, once it has ended,
    /// with its `FlightInfo` (or its refusal or failure). The query runs
    /// whether or not the client polls again.
    async fn poll(&self, request: Request<FlightDescriptor>) -> Result<PollInfo, Status> {
        let cmd = request.get_ref().cmd.clone();
        if let Ok(any) = Any::decode(&*cmd) {
            if any.type_url == POLL_TYPE_URL {
                let m = self.member(request.metadata()).await?;
                let id = String::from_utf8(any.value.to_vec())
                    .map_err(|_| status_of(not_found("query")))?;
                return self.poll_again(&m, &id, request.into_inner()).await;
            }
        }
        let (m, collab, spec) = self.spec_of(request.metadata(), &cmd).await?;
        let (q, _running) = self
            .s
            .submit_detached(m, collab, spec)
            .await
            .map_err(status_of)?;
        // The info so far: no endpoint yet (ADBC requires one in every
        // answer).
        Ok(PollInfo {
            info: Some(FlightInfo::new().with_descriptor(poll_descriptor(&q.id))),
            flight_descriptor: Some(poll_descriptor(&q.id)),
            progress: Some(0.0),
            expiration_time: None,
        })
    }

    async fn poll_again(
        &self,
        member: &str,
        id: &str,
        descriptor: FlightDescriptor,
    ) -> Result<PollInfo, Status> {
        let (q, _) = super::queries::visible_query(&self.s, member, id)
            .await
            .map_err(status_of)?;
        if q.member != member {
            return Err(status_of(not_found("query")));
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let q = self
                .s
                .store
                .query(id)
                .await
                .map_err(|e| status_of(e.into()))?
                .ok_or_else(|| status_of(not_found("query")))?;
            let running = matches!(
                q.state,
                airlock_store::QueryState::Submitted
                    | airlock_store::QueryState::Checked
                    | airlock_store::QueryState::Running
            );
            if !running {
                return Ok(PollInfo {
                    info: Some(self.ended(member, id, descriptor).await?),
                    flight_descriptor: None,
                    progress: Some(1.0),
                    expiration_time: None,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                let progress = self.progress_of(id);
                return Ok(PollInfo {
                    info: Some(FlightInfo::new().with_descriptor(descriptor.clone())),
                    flight_descriptor: Some(descriptor),
                    progress: Some(progress),
                    expiration_time: None,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Fragments done over fragments sent (0 before any is sent, and for
    /// crypto mode's steps): the progress REST shows, as a fraction.
    fn progress_of(&self, id: &str) -> f64 {
        use std::sync::atomic::Ordering;
        let Ok(p) = self.s.progress.lock() else {
            return 0.0;
        };
        p.get(id)
            .map(|p| {
                let total = p.fragments_total.load(Ordering::Relaxed);
                let done = p.fragments_done.load(Ordering::Relaxed);
                if total == 0 {
                    0.0
                } else {
                    (done as f64 / total as f64).min(0.99)
                }
            })
            .unwrap_or(0.0)
    }

    fn stored(&self, handle: &[u8], member: &str) -> Result<PreparedStatement, Status> {
        let handle = std::str::from_utf8(handle).unwrap_or_default();
        let p = self.prepared.lock().map_err(|_| Status::internal("lock"))?;
        p.iter()
            .find(|(h, s)| h == handle && s.member == member)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| status_of(not_found("prepared statement")))
    }

    fn store_prepared(&self, handle: &[u8], stmt: PreparedStatement) -> Result<(), Status> {
        let handle = std::str::from_utf8(handle).unwrap_or_default();
        let mut p = self.prepared.lock().map_err(|_| Status::internal("lock"))?;
        match p
            .iter_mut()
            .find(|(h, s)| h == handle && s.member == stmt.member)
        {
            Some((_, s)) => *s = stmt,
            None => {
                let mine = p.iter().filter(|(_, s)| s.member == stmt.member).count();
                if mine >= MAX_PREPARED_PER_MEMBER {
                    if let Some(i) = p.iter().position(|(_, s)| s.member == stmt.member) {
                        p.remove(i);
                    }
                }
                p.push((handle.to_string(), stmt));
            }
        }
        Ok(())
    }

    /// Refuses what Airlock does not do (after authenticating the call, so
    /// a caller without a token learns nothing of the endpoint).
    async fn refuse<T>(&self, md: &MetadataMap, what: &str) -> Result<T, Status> {
        self.member(md).await?;
        Err(refused_here(what))
    }

    /// A metadata command's `FlightInfo`: its schema and a ticket that is
    /// the command itself (`DoGet` builds the answer then).
    fn metadata_info(
        &self,
        schema: &Schema,
        command: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket {
                ticket: command.as_any().encode_to_vec().into(),
            }))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }
}

/// The type of the descriptor a poll answers with: the query's id.
const POLL_TYPE_URL: &str = "type.airlock.dev/airlock.PollQuery";

fn poll_descriptor(id: &str) -> FlightDescriptor {
    let any = Any {
        type_url: POLL_TYPE_URL.into(),
        value: id.as_bytes().to_vec().into(),
    };
    FlightDescriptor::new_cmd(any.encode_to_vec())
}

/// What the call waiting on a query and the query's task know of each
/// other: its id once submitted, and whether the call was dropped.
#[derive(Debug, Default)]
struct Watch {
    id: Option<String>,
    dropped: bool,
}

/// Cancels the query when the call waiting on it is dropped (a query that
/// has ended is left as it is).
struct CancelOnDrop {
    s: Shared,
    watch: Arc<Mutex<Watch>>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Ok(mut w) = self.watch.lock() else {
            return;
        };
        w.dropped = true;
        if let Some(id) = &w.id {
            self.s.cancel(id);
        }
    }
}

/// The token of an `authorization` header: `Bearer TOKEN`, or `Basic`
/// with the token as the password.
fn token_of(md: &MetadataMap) -> Option<String> {
    let v = md.get("authorization")?.to_str().ok()?.trim();
    if let Some(t) = v.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let b = v.strip_prefix("Basic ")?;
    // Go's Flight client sends it unpadded (RawStdEncoding), others padded.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = lenient.decode(b.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.trim().to_string())
}

/// A status from the REST API's error: the gRPC code of its HTTP status,
/// the same message, and the error body as JSON in [`ERROR_HEADER`].
pub(super) fn status_of(e: ApiError) -> Status {
    let ApiError(http, code, message) = e;
    let body = serde_json::json!({"code": code, "error": message});
    with_body(grpc_code(http, code), &message, &body)
}

fn grpc_code(http: StatusCode, code: ErrorCode) -> tonic::Code {
    use tonic::Code;
    match code {
        ErrorCode::Unauthorized => Code::Unauthenticated,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::Forbidden | ErrorCode::Refused | ErrorCode::ApprovalRefused => {
            Code::PermissionDenied
        }
        ErrorCode::Budget | ErrorCode::Limit => Code::ResourceExhausted,
        ErrorCode::BadInput | ErrorCode::BadApproval => Code::InvalidArgument,
        ErrorCode::NotReady => Code::Unavailable,
        ErrorCode::Conflict => Code::FailedPrecondition,
        ErrorCode::Expired | ErrorCode::Delivered => Code::NotFound,
        _ if http.is_client_error() => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

fn with_body(code: tonic::Code, message: &str, body: &serde_json::Value) -> Status {
    let mut md = MetadataMap::new();
    if let Ok(v) = body.to_string().parse() {
        md.insert(ERROR_HEADER, v);
    }
    Status::with_metadata(code, message, md)
}

/// The status of a query that ended refused or failed (none if released).
fn ended_badly(view: &crate::api::QueryView) -> Option<Status> {
    use crate::api::{FailureKind, QueryState};
    match view.state {
        QueryState::Released => None,
        QueryState::Refused => Some(refusal_status(
            view.refusal.as_ref()?,
            view.refused_by_node.as_deref(),
        )),
        _ => {
            let message = view
                .error
                .clone()
                .unwrap_or_else(|| "the query failed".into());
            let (code, kind) = match view.error_kind {
                Some(FailureKind::BadInput) => (tonic::Code::InvalidArgument, ErrorCode::BadInput),
                _ if message == airlock_hub::CANCELLED => {
                    (tonic::Code::Cancelled, ErrorCode::Failed)
                }
                _ => (tonic::Code::Internal, ErrorCode::Failed),
            };
            let body = serde_json::json!({"code": kind, "error": message});
            Some(with_body(code, &message, &body))
        }
    }
}

/// A refusal as a status: the message as the CLI prints it, the body
/// with the refusal and the refusing node.
fn refusal_status(refusal: &airlock_policy::Refusal, node: Option<&str>) -> Status {
    let message = airlock_hub::HubError::Refused {
        refusal: refusal.clone(),
        node: node.map(str::to_string),
    }
    .to_string();
    let body = serde_json::json!({
        "code": ErrorCode::Refused, "error": message,
        "refusal": refusal, "node": node,
    });
    with_body(tonic::Code::PermissionDenied, &message, &body)
}

fn result_schema(bytes: Vec<u8>) -> Result<SchemaRef, Status> {
    airlock_protocol::wire::decode_partitions(bytes)
        .map(|(schema, _)| schema)
        .map_err(|e| Status::internal(format!("the stored result does not decode: {e}")))
}

/// A statement's collaboration and what it asks: `EXECUTE [collab.]name`
/// is a template; other SQL has its table qualifiers (`collab.table`,
/// `airlock.collab.table`) removed, once all of them name the same
/// collaboration. SQL that does not parse is passed on as it is (the
/// guard says what is wrong with it).
fn resolve(sql: &str) -> Result<(Option<String>, Prepared), String> {
    use datafusion::sql::sqlparser::ast::{visit_relations_mut, ObjectNamePart, Statement};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use std::ops::ControlFlow;

    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, sql) else {
        return Ok((None, Prepared::Sql(sql.to_string())));
    };
    if let [Statement::Execute {
        name: Some(name),
        parameters,
        immediate: false,
        using,
        into,
        ..
    }] = statements.as_slice()
    {
        if !parameters.is_empty() || !using.is_empty() || !into.is_empty() {
            return Err(
                "EXECUTE names a template; bind its parameters as values of a prepared statement, not in the SQL".into(),
            );
        }
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => Ok(i.value.clone()),
                _ => Err("a template's name is an identifier".to_string()),
            })
            .collect::<Result<_, _>>()?;
        let (collab, template) = split_name(&parts, "template")?;
        return Ok((
            collab,
            Prepared::Template {
                name: template,
                params: BTreeMap::new(),
            },
        ));
    }
    let mut named: Option<String> = None;
    let mut error: Option<String> = None;
    let mut qualified = false;
    let _ = visit_relations_mut(&mut statements, |rel| {
        let parts: Vec<String> = rel
            .0
            .iter()
            .filter_map(|p| match p {
                ObjectNamePart::Identifier(i) => Some(i.value.clone()),
                _ => None,
            })
            .collect();
        if parts.len() != rel.0.len() || parts.len() < 2 {
            return ControlFlow::<()>::Continue(());
        }
        match split_name(&parts, "table") {
            Ok((Some(c), _)) => {
                match &named {
                    Some(n) if *n != c => {
                        error = Some(format!(
                            "a query reads one collaboration, and this one names two: '{n}' and '{c}'"
                        ));
                        return ControlFlow::Break(());
                    }
                    _ => named = Some(c),
                }
                qualified = true;
                let last = rel.0.pop();
                rel.0.clear();
                rel.0.extend(last);
            }
            Ok((None, _)) => {}
            Err(e) => {
                error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = error {
        return Err(e);
    }
    // Unqualified SQL goes on as written, byte for byte.
    let text = if qualified {
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        sql.to_string()
    };
    Ok((named, Prepared::Sql(text)))
}

/// `[airlock.]collab.name` → (collab, name); a one-part name has no
/// collaboration.
fn split_name(parts: &[String], what: &str) -> Result<(Option<String>, String), String> {
    match parts {
        [name] => Ok((None, name.clone())),
        [collab, name] => Ok((Some(collab.clone()), name.clone())),
        [catalog, collab, name] if catalog == CATALOG => Ok((Some(collab.clone()), name.clone())),
        _ => Err(format!(
            "a {what}'s name is {what}, collaboration.{what} or {CATALOG}.collaboration.{what}"
        )),
    }
}

/// One row of bound values as a template's parameters, as text: by name
/// when every column is named after one of `names`, else by position in
/// the order of `names`.
fn bind(batch: &RecordBatch, names: &[String]) -> Result<BTreeMap<String, String>, String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    if batch.num_rows() != 1 {
        return Err(format!(
            "a template runs with one row of parameter values; {} rows were bound",
            batch.num_rows()
        ));
    }
    let schema = batch.schema();
    let by_name = schema
        .fields()
        .iter()
        .all(|f| names.iter().any(|n| n == f.name()));
    if !by_name && schema.fields().len() != names.len() {
        return Err(format!(
            "the template has {} parameters ({}); {} values were bound",
            names.len(),
            names.join(", "),
            schema.fields().len()
        ));
    }
    let options = FormatOptions::default();
    let mut out = BTreeMap::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let name = if by_name {
            field.name().clone()
        } else {
            names[i].clone()
        };
        let col = batch.column(i);
        if col.is_null(0) {
            return Err(format!("parameter '{name}' is bound to NULL"));
        }
        let f = ArrayFormatter::try_new(col.as_ref(), &options).map_err(|e| e.to_string())?;
        out.insert(name, f.value(0).to_string());
    }
    Ok(out)
}

/// The most bytes of Flight data one binding of parameters may take (a
/// template's parameters are a handful of short values).
pub const MAX_BOUND_BYTES: usize = 64 * 1024;

/// The one batch of bound parameter values of a `DoPut`: read as it
/// arrives and refused past [`MAX_BOUND_BYTES`] (an endless stream holds
/// nothing), and refused if compressed (a small message must not decode
/// into a huge one) or if it holds more than one batch.
async fn bound_values(
    mut stream: impl Stream<Item = Result<arrow_flight::FlightData, Status>> + Unpin,
) -> Result<RecordBatch, Status> {
    use datafusion::arrow::ipc::{root_as_message, MessageHeader};
    use futures::StreamExt as _;
    let mut seen = Vec::new();
    let mut bytes = 0usize;
    while let Some(item) = stream.next().await {
        let data = item?;
        bytes += data.data_header.len() + data.data_body.len() + data.app_metadata.len();
        if bytes > MAX_BOUND_BYTES {
            return Err(status_of(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::Limit,
                format!("the bound parameter values are larger than {MAX_BOUND_BYTES} bytes"),
            )));
        }
        if !data.data_header.is_empty() {
            let message = root_as_message(&data.data_header)
                .map_err(|e| bad(format!("the bound parameters: {e}")))?;
            if message.header_type() == MessageHeader::RecordBatch
                && message
                    .header_as_record_batch()
                    .is_some_and(|b| b.compression().is_some())
            {
                return Err(bad("bound parameter values must not be compressed"));
            }
        }
        seen.push(Ok(data));
    }
    let batches: Vec<RecordBatch> =
        arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(futures::stream::iter(
            seen,
        ))
        .try_collect()
        .await
        .map_err(|e| bad(format!("the bound parameters: {e}")))?;
    match <[RecordBatch; 1]>::try_from(batches) {
        Ok([b]) => Ok(b),
        Err(v) if v.is_empty() => Err(bad("no parameter values were bound")),
        Err(v) => Err(bad(format!(
            "a template runs with one batch of one row of parameter values; {} batches were bound",
            v.len()
        ))),
    }
}

/// The Arrow schema a client binds a template's parameters with.
fn parameter_schema(collab: &Collaboration, template: &str) -> Option<Schema> {
    let t = collab
        .config()
        .templates
        .iter()
        .find(|t| t.name == template)?;
    Some(Schema::new(
        t.params
            .iter()
            .map(|(name, spec)| {
                let dt = match spec.kind {
                    airlock_policy::ParamType::Int => DataType::Int64,
                    airlock_policy::ParamType::Float => DataType::Float64,
                    airlock_policy::ParamType::String => DataType::Utf8,
                    airlock_policy::ParamType::Date => DataType::Date32,
                };
                Field::new(name, dt, false)
            })
            .collect::<Vec<_>>(),
    ))
}

fn refused_here(what: &str) -> Status {
    let message = format!(
        "{what} is refused: Airlock's Flight SQL endpoint runs queries that release aggregates, and changes no data"
    );
    let body = serde_json::json!({"code": ErrorCode::BadInput, "error": message});
    with_body(tonic::Code::Unimplemented, &message, &body)
}

/// Bad input (400 over REST), with its body.
fn bad(message: impl Into<String>) -> Status {
    status_of(super::state::bad_input(message))
}

/// A metadata call's answer: its one batch, as a stream.
fn metadata_answer(
    schema: SchemaRef,
    batch: Result<RecordBatch, impl std::fmt::Display>,
) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(stream_batches(schema, vec![batch])))
}

fn stream_batches(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> BoxStream<arrow_flight::FlightData> {
    let input = futures::stream::iter(batches.into_iter().map(Ok));
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(input)
            .map_err(|e| Status::internal(e.to_string())),
    )
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let token =
            token_of(request.metadata()).ok_or_else(|| status_of(super::state::unauthorized()))?;
        self.s.member_of_token(&token).await.map_err(status_of)?;
        let mut response: Response<BoxStream<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::iter([Ok(HandshakeResponse {
                protocol_version: 0,
                payload: Default::default(),
            })])));
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| status_of(super::state::unauthorized()))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let m = self.member(request.metadata()).await?;
        let (collab, what) = self.statement(&m, request.metadata(), &query.query).await?;
        let spec = what.spec();
        self.execute(&m, &collab, &spec, request.into_inner()).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let m = self.member(request.metadata()).await?;
        let p = self.stored(&cmd.prepared_statement_handle, &m)?;
        let spec = p.what.spec();
        self.execute(&m, &p.collab, &spec, request.into_inner())
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        let m = self.member(request.metadata()).await?;
        let id = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| status_of(not_found("query")))?;
        let bytes = self.s.fetch_result(&m, &id).await.map_err(status_of)?;
        let (schema, partitions) = airlock_protocol::wire::decode_partitions(bytes)
            .map_err(|e| Status::internal(format!("the stored result does not decode: {e}")))?;
        let batches: Vec<RecordBatch> = partitions.into_iter().flatten().collect();
        Ok(Response::new(stream_batches(schema, batches)))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.member(request.metadata()).await?;
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        self.member(request.metadata()).await?;
        let mut b = query.into_builder();
        b.append(CATALOG);
        metadata_answer(b.schema(), b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.member(request.metadata()).await?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        let m = self.member(request.metadata()).await?;
        let mut b = query.into_builder();
        for c in self.collaborations(&m).await? {
            b.append(CATALOG, c.name());
        }
        metadata_answer(b.schema(), b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.member(request.metadata()).await?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        let m = self.member(request.metadata()).await?;
        let mut b = query.into_builder();
        for c in self.collaborations(&m).await? {
            // A collaboration not ready (waiting for an approval, a node
            // down) lists its tables once it is.
            let Ok(engine) = self.s.engine(c.name()).await else {
                continue;
            };
            let mut tables: Vec<(&String, &SchemaRef)> = engine.hub.schemas().iter().collect();
            tables.sort_by(|a, b| a.0.cmp(b.0));
            for (table, schema) in tables {
                // Names and types only, as REST shows them: no metadata
                // or nullability of the owner's files.
                let bare = Schema::new(
                    schema
                        .fields()
                        .iter()
                        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                        .collect::<Vec<_>>(),
                );
                b.append(CATALOG, c.name(), table, "TABLE", &bare)
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        metadata_answer(b.schema(), b.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.member(request.metadata()).await?;
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        self.member(request.metadata()).await?;
        let mut b = query.into_builder();
        b.append("TABLE");
        metadata_answer(b.schema(), b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.member(request.metadata()).await?;
        let schema = query.clone().into_builder(&self.info).schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        self.member(request.metadata()).await?;
        let b = query.into_builder(&self.info);
        metadata_answer(b.schema(), b.build())
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.member(request.metadata()).await?;
        Err(refused_here(
            "an update statement (DoPut CommandStatementUpdate)",
        ))
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.member(request.metadata()).await?;
        Err(refused_here(
            "bulk ingestion (DoPut CommandStatementIngest)",
        ))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.member(request.metadata()).await?;
        Err(refused_here(
            "a prepared update (DoPut CommandPreparedStatementUpdate)",
        ))
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse(request.metadata(), "a Substrait plan").await
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.refuse(request.metadata(), "a Substrait plan").await
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let m = self.member(request.metadata()).await?;
        let mut p = self.stored(&query.prepared_statement_handle, &m)?;
        let Prepared::Template { name, params } = &mut p.what else {
            return Err(bad(
                "parameters are bound only to a template (EXECUTE name); ad hoc SQL takes none",
            ));
        };
        let (_, collab) = self.s.visible(&m, &p.collab).await.map_err(status_of)?;
        let names: Vec<String> = collab
            .config()
            .templates
            .iter()
            .find(|t| t.name == *name)
            .map(|t| t.params.keys().cloned().collect())
            .unwrap_or_default();
        let batch = bound_values(request.into_inner()).await?;
        *params = bind(&batch, &names).map_err(bad)?;
        self.store_prepared(&query.prepared_statement_handle, p)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let m = self.member(request.metadata()).await?;
        let (collab, what) = self.statement(&m, request.metadata(), &query.query).await?;
        let parameter_schema = match &what {
            Prepared::Template { name, .. } => {
                let (_, c) = self.s.visible(&m, &collab).await.map_err(status_of)?;
                let schema = parameter_schema(&c, name).ok_or_else(|| {
                    bad(format!("collaboration '{collab}' has no template '{name}'"))
                })?;
                schema_bytes(&schema)?
            }
            Prepared::Sql(_) => Default::default(),
        };
        let handle = hex::encode(rand_handle());
        self.store_prepared(
            handle.as_bytes(),
            PreparedStatement {
                member: m,
                collab,
                what,
            },
        )?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: Default::default(),
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let m = self.member(request.metadata()).await?;
        let handle = std::str::from_utf8(&query.prepared_statement_handle).unwrap_or_default();
        if let Ok(mut p) = self.prepared.lock() {
            p.retain(|(h, s)| !(h == handle && s.member == m));
        }
        Ok(())
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.refuse(request.metadata(), "a Substrait plan").await
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        self.refuse(request.metadata(), "a transaction").await
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        self.refuse(request.metadata(), "a transaction").await
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        self.refuse(request.metadata(), "a savepoint").await
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        self.refuse(request.metadata(), "a savepoint").await
    }

    async fn do_action_cancel_query(
        &self,
        _query: ActionCancelQueryRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        self.member(request.metadata()).await?;
        // A statement's FlightInfo is returned once its query has ended:
        // there is nothing left to cancel. Cancelling the GetFlightInfo
        // call cancels the query.
        Ok(ActionCancelQueryResult { result: 3 }) // CANCEL_RESULT_NOT_CANCELLABLE
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    use arrow_flight::{IpcMessage, SchemaAsIpc};
    let options = datafusion::arrow::ipc::writer::IpcWriteOptions::default();
    let IpcMessage(b) = SchemaAsIpc::new(schema, &options)
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(b)
}

fn rand_handle() -> [u8; 16] {
    use rand::RngCore as _;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// The endpoint served: [`FlightSql`] through arrow-flight's Flight SQL
/// dispatch, and `PollFlightInfo` (which that dispatch does not route) to
/// [`FlightSql::poll`].
pub struct Endpoint(FlightSql);

type Base = FlightSql;

#[tonic::async_trait]
impl FlightService for Endpoint {
    type HandshakeStream = <Base as FlightService>::HandshakeStream;
    type ListFlightsStream = <Base as FlightService>::ListFlightsStream;
    type DoGetStream = <Base as FlightService>::DoGetStream;
    type DoPutStream = <Base as FlightService>::DoPutStream;
    type DoExchangeStream = <Base as FlightService>::DoExchangeStream;
    type DoActionStream = <Base as FlightService>::DoActionStream;
    type ListActionsStream = <Base as FlightService>::ListActionsStream;

    async fn handshake(
        &self,
        r: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&self.0, r).await
    }
    async fn list_flights(
        &self,
        r: Request<arrow_flight::Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        FlightService::list_flights(&self.0, r).await
    }
    async fn get_flight_info(
        &self,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        FlightService::get_flight_info(&self.0, r).await
    }
    async fn poll_flight_info(
        &self,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.0.poll(r).await.map(Response::new)
    }
    async fn get_schema(
        &self,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<arrow_flight::SchemaResult>, Status> {
        FlightService::get_schema(&self.0, r).await
    }
    async fn do_get(&self, r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        FlightService::do_get(&self.0, r).await
    }
    async fn do_put(
        &self,
        r: Request<Streaming<arrow_flight::FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.0, r).await
    }
    async fn do_exchange(
        &self,
        r: Request<Streaming<arrow_flight::FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.0, r).await
    }
    async fn do_action(
        &self,
        r: Request<arrow_flight::Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.0, r).await
    }
    async fn list_actions(
        &self,
        r: Request<arrow_flight::Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.0, r).await
    }
}

/// Serves Flight SQL on `listener` over TLS (no client certificate: the
/// token authenticates) until `shutdown` resolves.
pub(super) async fn serve(
    s: Shared,
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::ServiceError> {
    let max = s.limits.max_request_bytes;
    let per_address = s.limits.max_connections_per_address;
    let svc = Endpoint(FlightSql::new(s).map_err(crate::ServiceError::Config)?);
    tonic::transport::Server::builder()
        .add_service(
            arrow_flight::flight_service_server::FlightServiceServer::new(svc)
                .max_decoding_message_size(max)
                .max_encoding_message_size(512 << 20),
        )
        .serve_with_incoming_shutdown(
            crate::tls_accept::incoming(listener, tls, Some(per_address)),
            shutdown,
        )
        .await
        .map_err(|e| crate::ServiceError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn qualifiers_pick_the_collaboration_and_are_removed() {
        let (c, w) = resolve("SELECT COUNT(*) FROM demo.audience a JOIN airlock.demo.purchases p ON a.email = p.email").expect("ok");
        assert_eq!(c.as_deref(), Some("demo"));
        let Prepared::Sql(sql) = w else { panic!() };
        assert!(!sql.contains("demo."), "{sql}");
        assert!(sql.contains("FROM audience a JOIN purchases p"), "{sql}");
    }

    #[test]
    fn unqualified_sql_goes_on_byte_for_byte() {
        let sql = "select  count(*) from audience -- a comment";
        let (c, w) = resolve(sql).expect("ok");
        assert_eq!(c, None);
        assert!(matches!(w, Prepared::Sql(s) if s == sql));
        // SQL that does not parse too: the guard says what is wrong.
        let bad = "SELEC 1";
        assert!(matches!(resolve(bad).expect("ok").1, Prepared::Sql(s) if s == bad));
    }

    #[test]
    fn two_collaborations_in_one_query_are_refused() {
        let e = resolve("SELECT * FROM a.t JOIN b.u ON t.x = u.x").expect_err("an error");
        assert!(e.contains("'a' and 'b'"), "{e}");
        let e = resolve("SELECT * FROM x.y.z.t").expect_err("an error");
        assert!(e.contains("collaboration.table"), "{e}");
        let e = resolve("SELECT * FROM other.demo.t").expect_err("an error");
        assert!(e.contains("airlock.collaboration.table"), "{e}");
    }

    #[test]
    fn execute_names_a_template() {
        let (c, w) = resolve("EXECUTE demo.reach_by_segment").expect("ok");
        assert_eq!(c.as_deref(), Some("demo"));
        assert!(matches!(w, Prepared::Template { name, .. } if name == "reach_by_segment"));
        let e = resolve("EXECUTE reach('x')").expect_err("an error");
        assert!(e.contains("bind its parameters"), "{e}");
    }

    #[test]
    fn bound_values_by_name_or_position() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let names = vec!["min_age".to_string(), "segment".to_string()];
        let named = RecordBatch::try_from_iter([
            ("segment", Arc::new(StringArray::from(vec!["sports"])) as _),
            ("min_age", Arc::new(Int64Array::from(vec![30])) as _),
        ])
        .expect("ok");
        let p = bind(&named, &names).expect("ok");
        assert_eq!(p["segment"], "sports");
        assert_eq!(p["min_age"], "30");
        let positional = RecordBatch::try_from_iter([
            ("0", Arc::new(Int64Array::from(vec![30])) as _),
            ("1", Arc::new(StringArray::from(vec!["sports"])) as _),
        ])
        .expect("ok");
        assert_eq!(bind(&positional, &names).expect("ok"), p);
        // A value is text to the template's parser, never SQL.
        let quote = RecordBatch::try_from_iter([
            (
                "segment",
                Arc::new(StringArray::from(vec!["x' OR 1=1 --"])) as _,
            ),
            ("min_age", Arc::new(Int64Array::from(vec![30])) as _),
        ])
        .expect("ok");
        assert_eq!(bind(&quote, &names).expect("ok")["segment"], "x' OR 1=1 --");
        let two_rows = RecordBatch::try_from_iter([(
            "segment",
            Arc::new(StringArray::from(vec!["a", "b"])) as _,
        )])
        .expect("ok");
        assert!(bind(&two_rows, &names)
            .expect_err("an error")
            .contains("one row"));
        let null = RecordBatch::try_from_iter([
            (
                "segment",
                Arc::new(StringArray::from(vec![None::<&str>])) as _,
            ),
            ("min_age", Arc::new(Int64Array::from(vec![30])) as _),
        ])
        .expect("ok");
        assert!(bind(&null, &names).expect_err("an error").contains("NULL"));
    }

    #[test]
    fn every_api_error_code_has_a_grpc_code_and_carries_its_body() {
        use tonic::Code;
        let cases = [
            (
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                Code::Unauthenticated,
            ),
            (StatusCode::NOT_FOUND, ErrorCode::NotFound, Code::NotFound),
            (
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                Code::PermissionDenied,
            ),
            (
                StatusCode::FORBIDDEN,
                ErrorCode::Budget,
                Code::ResourceExhausted,
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::Limit,
                Code::ResourceExhausted,
            ),
            (
                StatusCode::BAD_REQUEST,
                ErrorCode::BadInput,
                Code::InvalidArgument,
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NotReady,
                Code::Unavailable,
            ),
            (
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                Code::FailedPrecondition,
            ),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Failed,
                Code::Internal,
            ),
        ];
        for (http, code, grpc) in cases {
            let st = status_of(ApiError(http, code, "why".into()));
            assert_eq!(st.code(), grpc, "{code:?}");
            assert_eq!(st.message(), "why");
            let body: serde_json::Value = serde_json::from_str(
                st.metadata()
                    .get(ERROR_HEADER)
                    .expect("ok")
                    .to_str()
                    .expect("ok"),
            )
            .expect("ok");
            assert_eq!(body["code"], serde_json::to_value(code).expect("ok"));
        }
    }

    async fn encoded(
        batches: Vec<RecordBatch>,
        compression: Option<datafusion::arrow::ipc::CompressionType>,
    ) -> Vec<Result<arrow_flight::FlightData, Status>> {
        use futures::StreamExt as _;
        let options = datafusion::arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(compression)
            .expect("options");
        FlightDataEncoderBuilder::new()
            .with_options(options)
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .map_err(|e| Status::internal(e.to_string()))
            .collect::<Vec<_>>()
            .await
    }

    #[tokio::test]
    async fn bound_values_are_one_small_uncompressed_batch() {
        use datafusion::arrow::array::StringArray;
        use futures::StreamExt as _;
        let one = RecordBatch::try_from_iter([(
            "region",
            Arc::new(StringArray::from(vec!["north"])) as _,
        )])
        .expect("ok");
        let b = bound_values(futures::stream::iter(
            encoded(vec![one.clone()], None).await,
        ))
        .await
        .expect("one batch");
        assert_eq!(b, one);
        let two = encoded(vec![one.clone(), one.clone()], None).await;
        let e = bound_values(futures::stream::iter(two))
            .await
            .expect_err("two");
        assert!(e.message().contains("2 batches"), "{e}");
        let big = RecordBatch::try_from_iter([(
            "region",
            Arc::new(StringArray::from(vec!["x".repeat(100_000)])) as _,
        )])
        .expect("ok");
        let e = bound_values(futures::stream::iter(encoded(vec![big], None).await))
            .await
            .expect_err("too big");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        // An endless stream is cut at the limit, not collected.
        let endless = futures::stream::iter(encoded(vec![one.clone()], None).await).chain(
            futures::stream::repeat_with(|| {
                Ok(arrow_flight::FlightData::new().with_data_body(vec![0u8; 4096]))
            }),
        );
        let e = bound_values(Box::pin(endless)).await.expect_err("endless");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        let lz4 = encoded(
            vec![one],
            Some(datafusion::arrow::ipc::CompressionType::LZ4_FRAME),
        )
        .await;
        let e = bound_values(futures::stream::iter(lz4))
            .await
            .expect_err("compressed");
        assert!(e.message().contains("compressed"), "{e}");
    }

    #[test]
    fn tokens_are_read_from_bearer_and_basic_headers() {
        let mut md = MetadataMap::new();
        md.insert("authorization", "Bearer  tok ".parse().expect("ok"));
        assert_eq!(token_of(&md).as_deref(), Some("tok"));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:tok2");
        md.insert(
            "authorization",
            format!("Basic {basic}").parse().expect("ok"),
        );
        assert_eq!(token_of(&md).as_deref(), Some("tok2"));
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("anyone:tok2");
        assert_ne!(unpadded, basic);
        md.insert(
            "authorization",
            format!("Basic {unpadded}").parse().expect("ok"),
        );
        assert_eq!(token_of(&md).as_deref(), Some("tok2"));
        md.insert("authorization", "Digest x".parse().expect("ok"));
        assert_eq!(token_of(&md), None);
    }
}
