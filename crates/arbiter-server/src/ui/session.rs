//! Signing in to the dashboard: the admin token is presented once, on the sign-in form,
//! and exchanged for a session kept in memory; the browser holds only the session's
//! random id, in a cookie it never lets scripts read (`HttpOnly`), never sends with a
//! request another site started (`SameSite=Strict`) and, behind TLS, never sends in clear
//! (`Secure`). Every state-changing form carries the session's CSRF token besides.
//!
//! Sessions expire [`SESSION_LIFETIME`] after sign-in on the server's clock (the injected
//! one), whatever the cookie's `Max-Age` says, and end at sign-out. They live in this
//! process: a restart signs everyone out, which is the safe failure. At most
//! [`MAX_SESSIONS`] are kept; a new one past that evicts the oldest.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, HeaderValue, header};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "arbiter_ui";

/// The sign-in form's own cookie: a random value the form repeats, so a sign-in cannot be
/// forged from another site (login CSRF).
pub const SIGNIN_COOKIE: &str = "arbiter_signin";

/// How long a session lasts after sign-in.
pub const SESSION_LIFETIME: SignedDuration = SignedDuration::from_hours(8);

/// How long the sign-in form stays good.
pub const SIGNIN_LIFETIME: SignedDuration = SignedDuration::from_mins(10);

/// The most sessions kept at once.
pub const MAX_SESSIONS: usize = 1024;

/// One signed-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    /// The admin token's name: who reviews, promotes and revokes.
    pub admin: String,
    /// The token every form of the session carries.
    pub csrf: String,
    /// When it was opened.
    pub opened: Timestamp,
    /// When it ends.
    pub expires: Timestamp,
}

/// The sessions of this process, by the SHA-256 of their id (a memory dump does not
/// hand out live cookies).
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
}

/// A random token: 32 bytes, hex.
pub fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Whether two tokens are equal, in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    /// Opens a session for `admin` at `now`; returns its id (the cookie's value).
    pub fn open(&self, admin: &str, now: Timestamp) -> (String, Session) {
        let id = random_token();
        let session = Session {
            admin: admin.to_owned(),
            csrf: random_token(),
            opened: now,
            expires: now.checked_add(SESSION_LIFETIME).unwrap_or(Timestamp::MAX),
        };
        let mut open = self.lock();
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, s)| s.opened).map(|(k, _)| *k)
        {
            open.remove(&oldest);
        }
        open.insert(key(&id), session.clone());
        (id, session)
    }

    /// The live session whose id the request's cookie holds. An expired one is removed.
    pub fn find(&self, headers: &HeaderMap, now: Timestamp) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let k = key(id);
        let mut open = self.lock();
        match open.get(&k) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                open.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends the session whose id the request's cookie holds.
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.lock().remove(&key(id));
        }
    }

    /// How many sessions are open (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock cannot leave the map half-changed (every change
        // is one call), so a poisoned lock is still good.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The value of cookie `name` in the request, if it is there once. A cookie sent twice
/// (one set by a sibling subdomain, say) is refused rather than guessed at.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((n, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if n == name {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found.filter(|v| !v.is_empty())
}

/// Whether the request came over TLS (through a proxy that says so): cookies are then
/// marked `Secure`. A client can only make its own cookies stricter by claiming it.
pub fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split([';', ','])
                .any(|part| part.trim().eq_ignore_ascii_case("proto=https"))
        });
    forwarded_proto || forwarded
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, for `path`, expiring after
/// `lifetime` (or at once, to remove it), `Secure` behind TLS.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    lifetime: SignedDuration,
    secure: bool,
) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        lifetime.as_secs().max(0)
    );
    // Names, paths and values are ours (hex), so the header is always valid.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]

    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_expires_or_closes() {
        let sessions = Sessions::default();
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let (id, opened) = sessions.open("alice", t0);
        let headers = with_cookie(&format!("other=1; {COOKIE}={id}"));
        let found = sessions.find(&headers, t0).unwrap();
        assert_eq!(found.admin, "alice");
        assert_eq!(found.csrf, opened.csrf);
        let later = t0.checked_add(SESSION_LIFETIME).unwrap();
        assert!(sessions.find(&headers, later).is_none(), "expired");
        assert!(sessions.is_empty(), "an expired session is removed");

        let (id, _) = sessions.open("alice", t0);
        let headers = with_cookie(&format!("{COOKIE}={id}"));
        sessions.close(&headers);
        assert!(sessions.find(&headers, t0).is_none(), "closed");
        assert!(
            sessions
                .find(&with_cookie(&format!("{COOKIE}=nope")), t0)
                .is_none()
        );
    }

    #[test]
    fn a_cookie_sent_twice_is_refused() {
        let headers = with_cookie(&format!("{COOKIE}=a; {COOKIE}=b"));
        assert_eq!(cookie(&headers, COOKIE), None);
        assert_eq!(cookie(&with_cookie("x=1"), COOKIE), None);
        assert_eq!(cookie(&with_cookie(&format!("{COOKIE}=")), COOKIE), None);
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_goes_first() {
        let sessions = Sessions::default();
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let (first, _) = sessions.open("a", t0);
        for i in 1..=MAX_SESSIONS {
            let at = t0.checked_add(SignedDuration::from_secs(i as i64)).unwrap();
            sessions.open("a", at);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            sessions
                .find(&with_cookie(&format!("{COOKIE}={first}")), t0)
                .is_none()
        );
    }

    #[test]
    fn cookies_are_strict_and_secure_behind_tls() {
        let v = set_cookie(COOKIE, "abc", "/ui", SESSION_LIFETIME, true);
        let v = v.to_str().unwrap();
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict") && v.contains("Secure"));
        assert!(v.contains("Max-Age=28800"), "{v}");
        let mut headers = HeaderMap::new();
        assert!(!over_tls(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_tls(&headers));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=1.2.3.4;proto=https"),
        );
        assert!(over_tls(&headers));
    }
}
