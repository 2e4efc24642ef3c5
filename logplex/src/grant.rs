//! Session grants: a log session any log router of a cluster can serve,
//! with nothing stored anywhere.
//!
//! On one machine the control plane creates a session in its own log router
//! ([`Logplex::create_session`](crate::Logplex::create_session)). A control
//! node running apart has no log router to create it in, and the node that
//! should serve it (the one holding the app's lines) is another process. So
//! the control node signs the session instead: the URL's last segment is
//!
//! ```text
//! g1.<base64url(JSON {app, lines, tail, source, dyno, exp})>.<base64url(HMAC-SHA256)>
//! ```
//!
//! and a log router started with the same secret (the API key the control
//! nodes share) verifies the signature and the expiry when the client
//! fetches it, and serves the session as if it had created it. The key is
//! derived from the secret (HMAC of a fixed label), never the secret
//! itself, so a grant says nothing about the API key. A grant can be
//! fetched as long as it has not expired (the session TTL, 5 minutes by
//! default); it carries no more than the app id and what to show, and it
//! only opens what `POST /apps/{app}/log-sessions` would have.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::session::SessionParams;

/// What every grant starts with.
pub const PREFIX: &str = "g1.";

/// The key grants are signed and verified with.
#[derive(Clone)]
pub struct GrantKey(hmac::Key);

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(..)")
    }
}

/// Why a grant does not open a session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    /// Not a grant at all (a session id of this node, a typo).
    #[error("not a session grant")]
    NotAGrant,
    /// The signature does not match: another secret, or edited.
    #[error("the grant's signature does not match")]
    BadSignature,
    /// Signed, but past its expiry.
    #[error("the grant has expired")]
    Expired,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lines: Option<usize>,
    #[serde(default)]
    tail: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dyno: Option<String>,
    /// Unix seconds after which the grant is refused.
    exp: u64,
}

impl GrantKey {
    /// The grant key of a cluster whose nodes share `secret`.
    pub fn derive(secret: &str) -> Self {
        let outer = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let derived = hmac::sign(&outer, b"switchyard log-session grant v1");
        GrantKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// A grant for a session of `app_id` showing `params`, valid until
    /// `expires` (Unix seconds).
    pub fn sign(&self, app_id: &str, params: &SessionParams, expires: u64) -> String {
        let claims = Claims {
            app: app_id.to_string(),
            lines: params.lines,
            tail: params.tail,
            source: params.source.clone(),
            dyno: params.dyno.clone(),
            exp: expires,
        };
        // Serialising plain strings and numbers cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(json);
        let tag = hmac::sign(&self.0, body.as_bytes());
        format!("{PREFIX}{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The app and what to show, if `grant` is signed with this key and
    /// not expired at `now` (Unix seconds).
    pub fn verify(&self, grant: &str, now: u64) -> Result<(String, SessionParams), GrantError> {
        let rest = grant.strip_prefix(PREFIX).ok_or(GrantError::NotAGrant)?;
        let (body, tag) = rest.split_once('.').ok_or(GrantError::NotAGrant)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| GrantError::NotAGrant)?;
        hmac::verify(&self.0, body.as_bytes(), &tag).map_err(|_| GrantError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| GrantError::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| GrantError::BadSignature)?;
        if now > claims.exp {
            return Err(GrantError::Expired);
        }
        Ok((
            claims.app,
            SessionParams {
                lines: claims.lines,
                tail: claims.tail,
                source: claims.source,
                dyno: claims.dyno,
            },
        ))
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SessionParams {
        SessionParams {
            lines: Some(20),
            tail: true,
            source: Some("heroku".into()),
            dyno: Some("router".into()),
        }
    }

    #[test]
    fn a_grant_opens_what_it_was_signed_for_until_it_expires() {
        let key = GrantKey::derive("cluster secret");
        let grant = key.sign("app-id", &params(), 1_000);
        assert!(grant.starts_with(PREFIX));
        // Another node with the same secret reads it.
        let other = GrantKey::derive("cluster secret");
        assert_eq!(
            other.verify(&grant, 1_000),
            Ok(("app-id".to_string(), params()))
        );
        assert_eq!(other.verify(&grant, 1_001), Err(GrantError::Expired));
    }

    #[test]
    fn another_secret_or_an_edit_is_refused() {
        let grant = GrantKey::derive("a").sign("app-id", &params(), 1_000);
        assert_eq!(
            GrantKey::derive("b").verify(&grant, 0),
            Err(GrantError::BadSignature)
        );
        let key = GrantKey::derive("a");
        // The claims swapped for another app's, the signature kept.
        let forged_body = URL_SAFE_NO_PAD.encode(br#"{"app":"other","tail":true,"exp":1000}"#);
        let tag = grant.rsplit_once('.').map(|(_, t)| t).unwrap_or_default();
        let forged = format!("{PREFIX}{forged_body}.{tag}");
        assert_eq!(key.verify(&forged, 0), Err(GrantError::BadSignature));
        for junk in ["", "g1.", "g1.abc", "uuid-like-id", "g1.a.b.c", "g1.!!.??"] {
            assert!(key.verify(junk, 0).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn the_grant_does_not_contain_the_secret() {
        let grant = GrantKey::derive("s3cret-api-key").sign("app-id", &params(), 1);
        assert!(!grant.contains("s3cret"));
        let (body, _) = grant[PREFIX.len()..].split_once('.').expect("two parts");
        let json = URL_SAFE_NO_PAD.decode(body).expect("base64");
        assert!(!String::from_utf8_lossy(&json).contains("s3cret"));
    }
}
