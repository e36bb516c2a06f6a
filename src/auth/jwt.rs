//! Reading a token's claims on the client without verifying it (the edge verifies;
//! the client only needs `exp`, `aud` and `email` to manage its cache and report).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

pub use crate::protocol::Audience;

/// The claims the client cares about.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenClaims {
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Audience(s).
    pub aud: Audience,
    /// The identity, when the token names a person.
    #[serde(default)]
    pub email: Option<String>,
    /// Issuer.
    #[serde(default)]
    pub iss: Option<String>,
}

impl TokenClaims {
    /// The first (usually only) audience.
    pub fn aud_string(&self) -> String {
        match &self.aud {
            Audience::One(a) => a.clone(),
            Audience::Many(v) => v.first().cloned().unwrap_or_default(),
        }
    }
}

/// Why a token's claims could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Not three dot-separated parts.
    #[error("not a JWT")]
    Shape,
    /// The payload is not base64url JSON with `exp` and `aud`.
    #[error("JWT payload unreadable")]
    Payload,
}

pub use crate::protocol::now_secs;

/// The claims of a compact JWT, unverified.
pub fn claims(token: &str) -> Result<TokenClaims, ClaimsError> {
    let mut parts = token.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::Shape);
    };
    let raw = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClaimsError::Payload)?;
    serde_json::from_slice(&raw).map_err(|_| ClaimsError::Payload)
}

/// RFC 3339 (UTC, seconds) for a Unix time, for `--json` output.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_string_or_array_aud_and_refuses_junk() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let t = format!("h.{}.s", enc(r#"{"aud":"x","exp":5}"#));
        assert!(claims(&t).unwrap().aud.contains("x"));
        let t = format!("h.{}.s", enc(r#"{"aud":["x","y"],"exp":5,"email":"a@b"}"#));
        assert!(claims(&t).unwrap().aud.contains("y"));
        assert_eq!(claims("a.b"), Err(ClaimsError::Shape));
        assert_eq!(claims("a.!!.c"), Err(ClaimsError::Payload));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
