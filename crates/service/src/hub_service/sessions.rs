//! The console's browser sessions.
//!
//! A session is made by `POST /v1/session` from a member's token: the hub
//! keeps the token in memory under a random session id, which the browser
//! holds only as a `__Host-` cookie that is `Secure`, `HttpOnly` and
//! `SameSite=Strict` (no script can read it, no other site can send it).
//! Every state-changing call on a session must also carry its CSRF token
//! in `x-csrf-token`, which only a page of this origin can read (from the
//! sign-in answer or `GET /v1/session`). A session ends at sign-out, after
//! [`IDLE_MS`] unused or [`LIFETIME_MS`] in all, when the hub restarts, or
//! as soon as its token is revoked or expires (every call authenticates the
//! token again). Bearer-token calls need no CSRF token: a browser never
//! sends one by itself.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{header, HeaderMap};

/// The session cookie (`__Host-`: Secure, path `/`, no domain).
pub const COOKIE: &str = "__Host-airlock-session";
/// The header carrying a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session unused this long ends (ms): 8 hours.
pub const IDLE_MS: i64 = 8 * 3600 * 1000;
/// A session ends this long after sign-in whatever happens (ms): 24 hours.
pub const LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// Sessions kept per member; signing in once more ends the oldest.
pub const MAX_SESSIONS_PER_MEMBER: usize = 16;

struct Session {
    token: String,
    member: String,
    csrf: String,
    created_ms: i64,
    used_ms: i64,
}

/// The hub's browser sessions (in memory only).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

/// 32 random bytes from the OS, as hex.
fn random_hex() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Constant-time equality of two strings.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    /// Opens a session for `member` with `token`: its id and CSRF token.
    pub fn open(&self, token: &str, member: &str, now: i64) -> Option<(String, String)> {
        let mut s = self.0.lock().ok()?;
        s.retain(|_, v| live(v, now));
        let mut mine: Vec<(String, i64)> = s
            .iter()
            .filter(|(_, v)| v.member == member)
            .map(|(k, v)| (k.clone(), v.created_ms))
            .collect();
        mine.sort_by_key(|(_, c)| *c);
        while mine.len() >= MAX_SESSIONS_PER_MEMBER {
            let (k, _) = mine.remove(0);
            s.remove(&k);
        }
        let (id, csrf) = (random_hex(), random_hex());
        s.insert(
            id.clone(),
            Session {
                token: token.to_string(),
                member: member.to_string(),
                csrf: csrf.clone(),
                created_ms: now,
                used_ms: now,
            },
        );
        Some((id, csrf))
    }

    /// The token and CSRF token of live session `id`, marked used.
    pub fn get(&self, id: &str, now: i64) -> Option<(String, String)> {
        let mut s = self.0.lock().ok()?;
        let v = s.get_mut(id)?;
        if !live(v, now) {
            s.remove(id);
            return None;
        }
        v.used_ms = now;
        Some((v.token.clone(), v.csrf.clone()))
    }

    /// Ends session `id`.
    pub fn close(&self, id: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(id);
        }
    }
}

fn live(v: &Session, now: i64) -> bool {
    now - v.used_ms < IDLE_MS && now - v.created_ms < LIFETIME_MS
}

/// The session id a request's cookie names, if any.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sessions_end_when_idle_old_closed_or_crowded_out() {
        let s = Sessions::default();
        let (id, csrf) = s.open("tok", "m", 0).expect("open");
        assert_eq!(s.get(&id, 1).map(|(_, c)| c), Some(csrf));
        assert!(s.get(&id, 1 + IDLE_MS).is_none(), "idle");
        let (id, _) = s.open("tok", "m", 0).expect("open");
        for t in (0..LIFETIME_MS).step_by((IDLE_MS / 2) as usize) {
            assert!(s.get(&id, t).is_some());
        }
        assert!(s.get(&id, LIFETIME_MS).is_none(), "lifetime");
        let (id, _) = s.open("tok", "m", 0).expect("open");
        s.close(&id);
        assert!(s.get(&id, 1).is_none(), "closed");
        let first = s.open("tok", "m", 0).expect("open").0;
        for i in 1..=MAX_SESSIONS_PER_MEMBER {
            s.open("tok", "m", i as i64).expect("open");
        }
        assert!(s.get(&first, 100).is_none(), "the oldest is crowded out");
        assert!(!same("ab", "abc") && !same("ab", "ac") && same("ab", "ab"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-airlock-session=xyz; b=2"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("xyz"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("airlock-session=xyz"),
        );
        assert_eq!(cookie(&h), None);
    }
}
