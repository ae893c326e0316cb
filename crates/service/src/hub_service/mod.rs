//! `airlock hub serve`: the control plane's REST API (axum over TLS).
//!
//! Every call but `/openapi.json`, the console's files (`/`, `/assets/`)
//! and signing in carries a member's bearer token or console session
//! ([`sessions`]). A member sees only the collaborations it belongs to:
//! "no such collaboration" and "not yours" are the same 404. Queries move through the store's lifecycle
//! (submitted → checked → running → released | refused | failed), each step
//! in the collaboration's audit chain; results are read only by members
//! with the `receive` ability.

mod collabs;
mod connections;
pub mod console;
pub mod flight_sql;
mod ports;
mod queries;
pub mod sessions;
mod state;
mod sync;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use airlock_store::Store;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use axum::Router;

use crate::config::HubConfig;
use crate::ServiceError;

use collabs::*;
use console::*;
use queries::*;
use state::*;
pub use state::{ApiError, HubState};

/// The one route served without a token.
const OPENAPI: &str = "/openapi.json";

/// Authenticates every `/v1` request before anything else (bodies
/// included) is looked at.
async fn authenticate(
    State(s): State<Shared>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    // Signing in is what makes a session: it carries a token in its body.
    if req.method() == axum::http::Method::POST && req.uri().path() == "/v1/session" {
        return Ok(next.run(req).await);
    }
    let m = s.caller_of(req.method(), req.headers()).await?;
    req.extensions_mut().insert(Caller(m));
    Ok(next.run(req).await)
}

/// The handler of a route of [`crate::api::ROUTES`], by method and path.
/// The router is built by walking `ROUTES`, the same table the OpenAPI
/// document is built from: a route is served only if it is documented, and
/// a test checks every documented route has its handler here.
fn handler(method: &str, path: &str) -> Option<MethodRouter<Shared>> {
    use axum::routing::{delete, post, put};
    Some(match (method, path) {
        ("get", "/v1/whoami") => get(whoami),
        ("post", "/v1/session") => post(sign_in),
        ("get", "/v1/session") => get(show_session),
        ("delete", "/v1/session") => delete(sign_out),
        ("get", "/v1/collaborations/{name}/audit/verify") => get(verify_audit),
        ("get", "/v1/collaborations/{name}/records") => get(get_records),
        ("get", "/v1/collaborations") => get(list_collabs),
        ("post", "/v1/collaborations") => post(create_collab),
        ("get", "/v1/approvals") => get(list_approvals),
        ("get", "/v1/collaborations/{name}/approval") => get(show_approval),
        ("post", "/v1/collaborations/{name}/approval") => post(decide_approval),
        ("get", "/v1/collaborations/{name}") => get(show_collab),
        ("put", "/v1/collaborations/{name}") => put(apply_collab),
        ("post", "/v1/collaborations/{name}/check") => post(check_query),
        ("get", "/v1/collaborations/{name}/queries") => get(list_queries),
        ("post", "/v1/collaborations/{name}/queries") => post(submit_query),
        ("get", "/v1/collaborations/{name}/audit") => get(get_audit),
        ("get", "/v1/collaborations/{name}/budget") => get(get_budget),
        ("get", "/v1/collaborations/{name}/templates") => get(list_templates),
        ("get", "/v1/collaborations/{name}/export") => get(export_metadata),
        ("post", "/v1/collaborations/{name}/templates/{template}/approval") => {
            post(approve_template)
        }
        ("delete", "/v1/collaborations/{name}/templates/{template}/approval") => {
            delete(revoke_template)
        }
        ("post", "/v1/datasets/update") => post(update_dataset),
        ("get", "/v1/queries/{id}") => get(get_query),
        ("get", "/v1/queries/{id}/result") => get(get_result),
        ("post", "/v1/queries/{id}/cancel") => post(cancel_query),
        _ => return None,
    })
}

/// The REST router over `state`, built from [`crate::api::ROUTES`].
pub fn router(state: Shared) -> Router {
    let mut by_path: Vec<(&str, MethodRouter<Shared>)> = Vec::new();
    for (method, path, _) in crate::api::ROUTES {
        if *path == OPENAPI {
            continue;
        }
        let h = handler(method, path)
            .unwrap_or_else(|| panic!("the documented route {method} {path} has no handler"));
        match by_path.iter_mut().find(|(p, _)| p == path) {
            Some((_, r)) => *r = std::mem::take(r).merge(h),
            None => by_path.push((path, h)),
        }
    }
    let v1 = by_path
        .into_iter()
        .fold(Router::new(), |r, (path, h)| r.route(path, h))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    let max_body = state.limits.max_request_bytes;
    Router::new()
        .route(OPENAPI, get(openapi))
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
        .merge(v1)
        .fallback(|| async { not_found("route") })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(security_headers))
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
    // Flight SQL on its own port, with the same certificate; its line
    // comes before the REST one (the line `airlock up` waits for).
    let flight_listen = match &cfg.flight_sql_listen {
        Some(a) => a.clone(),
        None => format!("{}:0", addr.ip()),
    };
    let flight_listener = tokio::net::TcpListener::bind(&flight_listen)
        .await
        .map_err(|e| ServiceError::Io(format!("cannot listen on {flight_listen}: {e}")))?;
    let flight_addr = flight_listener
        .local_addr()
        .map_err(|e| ServiceError::Io(e.to_string()))?;
    let flight_tls = crate::tls_accept::token_server_config(&state.signing.0, &state.signing.1)?;
    println!("flight-sql grpc+tls://{flight_addr}");
    let (stop_flight, flight_stopped) = tokio::sync::oneshot::channel::<()>();
    let flight = tokio::spawn(flight_sql::serve(
        state.clone(),
        flight_listener,
        flight_tls,
        async move {
            let _ = flight_stopped.await;
        },
    ));
    let nodes: BTreeSet<&String> = state.links.members().collect();
    if !console::console_built() {
        eprintln!("hub: this build has no web console (Node.js was missing when it was built); `/` says so");
    }
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
    let limits = state.limits;
    let mut server = axum_server::from_tcp_rustls(listener, tls)
        .map_err(|e| ServiceError::Io(e.to_string()))?
        .map(|tls| {
            tls.acceptor(connections::PerAddress::new(
                limits.max_connections_per_address,
            ))
        });
    server
        .http_builder()
        .http1()
        .header_read_timeout(Some(std::time::Duration::from_secs(
            limits.header_read_timeout_secs.max(1),
        )));
    let served = server
        .handle(handle)
        .serve(router(state).into_make_service())
        .await
        .map_err(|e| ServiceError::Io(e.to_string()));
    let _ = stop_flight.send(());
    match flight.await {
        Ok(Err(e)) => eprintln!("hub: the Flight SQL endpoint stopped: {e}"),
        Err(e) => eprintln!("hub: the Flight SQL endpoint stopped: {e}"),
        Ok(Ok(())) => {}
    }
    served
}

#[cfg(test)]
mod tests {
    use super::handler;

    #[test]
    fn every_documented_route_has_its_handler() {
        for (method, path, _) in crate::api::ROUTES {
            if *path != super::OPENAPI {
                assert!(handler(method, path).is_some(), "{method} {path}");
            }
        }
        // And an undocumented one has none (it cannot be served).
        assert!(handler("get", "/v1/secret").is_none());
    }
}
