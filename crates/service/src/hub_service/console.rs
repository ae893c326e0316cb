//! The web console: its files (built from `console/` by this crate's build
//! script and embedded), the browser sessions it signs in with, and the
//! security headers of every answer of the hub's HTTPS port.
//!
//! Sessions: [`super::sessions`].

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::api::ErrorCode;

use super::sessions::*;
use super::state::*;

mod assets {
    include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));
}

/// The Content-Security-Policy of every answer: scripts, styles and
/// connections only from this origin, nothing inline, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn no_session() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "a valid bearer token or console session is required".into(),
    )
}

impl HubState {
    /// The member of a request: by its bearer token, or by its session
    /// cookie (then a state-changing method needs the session's CSRF
    /// token in `x-csrf-token`).
    pub(super) async fn caller_of(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<String, ApiError> {
        if headers.contains_key(header::AUTHORIZATION) {
            return self.member_of(headers).await;
        }
        let id = cookie(headers).ok_or_else(no_session)?;
        let (token, csrf) = self
            .sessions
            .get(&id, airlock_store::now_ms())
            .ok_or_else(no_session)?;
        // A request another site made (the browser says so) is refused
        // whatever its method: SameSite=Strict already keeps the cookie
        // from other sites, this also from sibling subdomains.
        if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            if site != "same-origin" && site != "none" {
                return Err(forbidden(
                    "a console session is used only by the console's own pages (sec-fetch-site)",
                ));
            }
        }
        let member = match self
            .store
            .authenticate(&token, airlock_store::now_ms())
            .await
        {
            Ok(Some(m)) => m,
            Ok(None) => {
                // The token was revoked or expired: so is the session.
                self.sessions.close(&id);
                return Err(no_session());
            }
            Err(e) => {
                return Err(ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::NotReady,
                    format!("the hub cannot check the session's token now: {e}"),
                ))
            }
        };
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let given = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !same(given, &csrf) {
                return Err(forbidden(format!(
                    "a console session's {} needs its CSRF token in the {CSRF_HEADER} header",
                    method.as_str()
                )));
            }
        }
        Ok(member)
    }
}

/// Body of `POST /v1/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignIn {
    token: String,
}

fn set_cookie(value: &str, max_age_secs: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Signs in with a member's token: a session cookie and its CSRF token.
pub(super) async fn sign_in(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(rejected)?;
    // The browser's previous session (if any) ends here.
    if let Some(old) = cookie(&headers) {
        s.sessions.close(&old);
    }
    let token = body.token.trim().to_string();
    let member = s.member_of_token(&token).await?;
    let (id, csrf) = s
        .sessions
        .open(&token, &member, airlock_store::now_ms())
        .ok_or_else(|| failed("the hub's sessions are unavailable"))?;
    let mut r = Json(serde_json::json!({"member": member, "csrf": csrf})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&id, LIFETIME_MS / 1000));
    Ok(r)
}

/// The session's member and CSRF token (for a page loaded while signed in).
pub(super) async fn show_session(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = cookie(&headers).ok_or_else(no_session)?;
    let (_, csrf) = s
        .sessions
        .get(&id, airlock_store::now_ms())
        .ok_or_else(no_session)?;
    Ok(Json(serde_json::json!({"member": m, "csrf": csrf})))
}

/// Signs out: the session ends and the cookie is cleared.
pub(super) async fn sign_out(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        s.sessions.close(&id);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    r
}

/// The console's page (`/`).
pub(super) async fn index(headers: HeaderMap) -> Response {
    asset_response("index.html", &headers)
}

/// One of the console's files (`/assets/...`).
pub(super) async fn asset(UrlPath(path): UrlPath<String>, headers: HeaderMap) -> Response {
    asset_response(&format!("assets/{path}"), &headers)
}

/// Whether the hub was built with its console (not the "not built" page).
pub fn console_built() -> bool {
    assets::ASSETS
        .iter()
        .any(|(p, ..)| p.starts_with("assets/"))
}

/// The console's files' total size, gzip-compressed (what a first load
/// transfers).
pub fn console_compressed_bytes() -> usize {
    assets::COMPRESSED_BYTES
}

fn asset_response(path: &str, headers: &HeaderMap) -> Response {
    let Some((_, raw, gz, ctype)) = assets::ASSETS.iter().find(|(p, ..)| *p == path) else {
        return not_found("file").into_response();
    };
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    // Built files carry their content hash in their names: cached for
    // good. The page itself is asked for again every time.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut r = if gzip {
        (
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CONTENT_ENCODING, "gzip"),
                (header::CACHE_CONTROL, cache),
                (header::VARY, "accept-encoding"),
            ],
            *gz,
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CACHE_CONTROL, cache),
                (header::VARY, "accept-encoding"),
            ],
            *raw,
        )
            .into_response()
    };
    r.headers_mut().remove(header::PRAGMA);
    r
}

/// Adds the security headers to every answer of the HTTPS port; API
/// answers (results among them) are never cached.
pub(super) async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = req.uri().path().starts_with("/v1/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if api || !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
