//! `airlock hub serve`: the control plane's REST API (axum over TLS).
//!
//! Every call but `/openapi.json` carries a member's bearer token. A member
//! sees only the collaborations it belongs to: "no such collaboration" and
//! "not yours" are the same 404. Queries move through the store's lifecycle
//! (submitted → checked → running → released | refused | failed), each step
//! in the collaboration's audit chain; results are read only by members
//! with the `receive` ability.

mod collabs;
mod queries;
mod state;
mod sync;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use airlock_store::Store;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::config::HubConfig;
use crate::ServiceError;

use collabs::*;
use queries::*;
use state::*;
pub use state::{ApiError, HubState};

/// Authenticates every `/v1` request before anything else (bodies
/// included) is looked at.
async fn authenticate(
    State(s): State<Shared>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let m = s.member_of(req.headers()).await?;
    req.extensions_mut().insert(Caller(m));
    Ok(next.run(req).await)
}

/// The REST router over `state`.
pub fn router(state: Shared) -> Router {
    let v1 = Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/collaborations", get(list_collabs).post(create_collab))
        .route("/v1/approvals", get(list_approvals))
        .route(
            "/v1/collaborations/{name}/approval",
            get(show_approval).post(decide_approval),
        )
        .route(
            "/v1/collaborations/{name}",
            get(show_collab).put(apply_collab),
        )
        .route(
            "/v1/collaborations/{name}/check",
            axum::routing::post(check_query),
        )
        .route(
            "/v1/collaborations/{name}/queries",
            get(list_queries).post(submit_query),
        )
        .route("/v1/collaborations/{name}/audit", get(get_audit))
        .route("/v1/collaborations/{name}/budget", get(get_budget))
        .route("/v1/collaborations/{name}/templates", get(list_templates))
        .route("/v1/collaborations/{name}/export", get(export_metadata))
        .route(
            "/v1/collaborations/{name}/templates/{template}/approval",
            axum::routing::post(approve_template).delete(revoke_template),
        )
        .route("/v1/datasets/update", axum::routing::post(update_dataset))
        .route("/v1/queries/{id}", get(get_query))
        .route("/v1/queries/{id}/result", get(get_result))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    let max_body = state.limits.max_request_bytes;
    Router::new()
        .route("/openapi.json", get(openapi))
        .merge(v1)
        .fallback(|| async { not_found("route") })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Every minute, deletes the results every collaboration's retention
/// period has run out on.
async fn retention_sweeper(store: Store) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let Ok(collabs) = store.collaborations().await else {
            continue;
        };
        for rec in collabs {
            if let Ok(collab) = parse_collab(&rec.toml) {
                if let Err(e) = expire(&store, &collab).await {
                    eprintln!("retention of '{}': {e}", rec.name);
                }
            }
        }
    }
}

/// Serves the hub until `shutdown` resolves. Prints `listening on
/// https://ADDR` once bound (the line `airlock up` waits for).
pub async fn serve(
    cfg: HubConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    crate::install_crypto_provider();
    let state = Arc::new(HubState::open(&cfg).await?);
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cfg.tls.cert, &cfg.tls.key)
        .await
        .map_err(|e| ServiceError::Config(format!("TLS: {e}")))?;
    let listener = std::net::TcpListener::bind(&cfg.listen)
        .map_err(|e| ServiceError::Io(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| ServiceError::Io(e.to_string()))?;
    let nodes: BTreeSet<&String> = state.links.members().collect();
    println!(
        "hub listening on https://{addr} (nodes: {})",
        nodes.into_iter().cloned().collect::<Vec<_>>().join(", ")
    );
    tokio::spawn(retention_sweeper(state.store.clone()));
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h2.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    axum_server::from_tcp_rustls(listener, tls)
        .map_err(|e| ServiceError::Io(e.to_string()))?
        .handle(handle)
        .serve(router(state).into_make_service())
        .await
        .map_err(|e| ServiceError::Io(e.to_string()))
}
