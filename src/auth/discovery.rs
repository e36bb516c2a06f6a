//! App discovery (README: "Logging in"): `HEAD` the app with
//! `cf-access-metadata-request: true` (no redirects), verify the `cf-access-metadata`
//! JWT against the auth domain's JWKS, and check its claims.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::AuthError;
use crate::protocol;
use crate::protocol::metadata::{AppMetadata, MATCH};

/// Oldest metadata we accept.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Furthest in the future a metadata `iat` may be (clock skew).
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// Largest JWKS document read (Cloudflare's holds two keys, about 2 KiB).
pub const MAX_JWKS: usize = 256 * 1024;
/// Longest metadata JWT accepted (about 1 KiB in practice).
pub const MAX_METADATA: usize = 16 * 1024;

/// What discovery learned about an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// The verified metadata claims.
    pub meta: AppMetadata,
    /// `http` or `https`: how to reach the app and its auth domain.
    pub scheme: &'static str,
}

impl AppInfo {
    /// URL of the auth domain's JWKS.
    pub fn certs_url(scheme: &str, auth_domain: &str) -> String {
        format!("{scheme}://{auth_domain}{}", protocol::CERTS_PATH)
    }
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    kty: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    e: String,
}

/// Step one: `HEAD` the app for its metadata JWT; returns the JWT and its claims,
/// not yet verified (the auth domain named inside tells where the keys are).
pub async fn fetch(
    http: &reqwest::Client,
    app_url: &str,
) -> Result<(String, AppMetadata), AuthError> {
    let net = |e: reqwest::Error| super::network(&format!("app discovery at {app_url}"), &e);
    let resp = http
        .head(app_url)
        .header(protocol::METADATA_REQUEST, "true")
        .send()
        .await
        .map_err(net)?;
    let jwt = resp
        .headers()
        .get(protocol::METADATA)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            AuthError::Discovery(format!(
                "{app_url} answered HTTP {} without a {} header: is it behind Access?",
                resp.status().as_u16(),
                protocol::METADATA
            ))
        })?
        .to_string();
    if jwt.len() > MAX_METADATA {
        return Err(AuthError::Discovery(format!(
            "{app_url} sent app metadata larger than {MAX_METADATA} bytes; refused"
        )));
    }
    let unverified = unverified_metadata(&jwt)?;
    Ok((jwt, unverified))
}

/// Step two: verify the metadata JWT with the auth domain's JWKS and check its
/// claims for `host`.
pub async fn verify_with_jwks(
    http: &reqwest::Client,
    jwt: &str,
    auth_domain: &str,
    host: &str,
    scheme: &'static str,
) -> Result<AppInfo, AuthError> {
    let certs_url = AppInfo::certs_url(scheme, auth_domain);
    let resp = http
        .get(&certs_url)
        .send()
        .await
        .map_err(|e| super::network(&format!("fetching {certs_url}"), &e))?
        .error_for_status()
        .map_err(|e| AuthError::Discovery(format!("fetching {certs_url}: {e}")))?;
    let body = super::read_limited(resp, MAX_JWKS, &certs_url).await?;
    let jwks: Jwks = serde_json::from_slice(&body)
        .map_err(|e| AuthError::Discovery(format!("{certs_url} is not a JWKS: {e}")))?;
    let meta = verify(jwt, &jwks.keys)?;
    check(&meta, host, super::jwt::now_secs())?;
    if meta.auth_domain != auth_domain {
        return Err(AuthError::Discovery(
            "app metadata changed during discovery".into(),
        ));
    }
    Ok(AppInfo { meta, scheme })
}

fn unverified_metadata(jwt: &str) -> Result<AppMetadata, AuthError> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap_or("");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::Discovery("app metadata is not a JWT".into()))?;
    serde_json::from_slice(&raw)
        .map_err(|_| AuthError::Discovery("app metadata claims unreadable".into()))
}

fn verify(jwt: &str, keys: &[Jwk]) -> Result<AppMetadata, AuthError> {
    let header = jsonwebtoken::decode_header(jwt)
        .map_err(|_| AuthError::Discovery("app metadata is not a JWT".into()))?;
    if header.alg != Algorithm::RS256 {
        return Err(AuthError::Discovery(
            "app metadata is not signed with RS256".into(),
        ));
    }
    let mut v = Validation::new(Algorithm::RS256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    let candidates = keys
        .iter()
        .filter(|k| k.kty == "RSA" && (header.kid.is_none() || k.kid == header.kid));
    for k in candidates {
        let Ok(key) = DecodingKey::from_rsa_components(&k.n, &k.e) else {
            continue;
        };
        if let Ok(data) = jsonwebtoken::decode::<AppMetadata>(jwt, &key, &v) {
            return Ok(data.claims);
        }
    }
    Err(AuthError::Discovery(
        "app metadata signature does not verify with the auth domain's keys".into(),
    ))
}

/// The metadata claim checks (README: "Logging in", step 1).
pub fn check(meta: &AppMetadata, host: &str, now: u64) -> Result<(), AuthError> {
    let bad = |why: String| Err(AuthError::Discovery(why));
    if meta.kind != MATCH {
        return bad(format!(
            "app metadata type is {:?}, not \"match\"",
            meta.kind
        ));
    }
    if !meta.hostname.eq_ignore_ascii_case(host) {
        return bad(format!("app metadata is for {}, not {host}", meta.hostname));
    }
    if meta.aud.trim().is_empty() {
        return bad("app metadata has no aud".into());
    }
    if !super::binding::metadata_fits(meta, host) {
        return bad(format!(
            "the edge at {host} claims to be app {:?}, which does not cover {host}; refusing to send it any token",
            meta.app_hostname
        ));
    }
    if meta.iat + MAX_AGE.as_secs() < now || meta.iat > now + MAX_SKEW.as_secs() {
        return bad("app metadata is too old or from the future; check the clock".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> AppMetadata {
        AppMetadata {
            kind: MATCH.into(),
            hostname: "db.test".into(),
            auth_domain: "auth.test".into(),
            aud: "aud1".into(),
            app_hostname: "db.test".into(),
            iat: 1_000_000,
            transfer_url: None,
        }
    }

    #[test]
    fn claim_checks() {
        assert!(check(&meta(), "db.test", 1_000_100).is_ok());
        assert!(check(&meta(), "other.test", 1_000_100).is_err());
        // Metadata for this host naming another app: the harvesting attack.
        let claims_other_app = AppMetadata {
            hostname: "evil.test".into(),
            ..meta()
        };
        assert!(check(&claims_other_app, "evil.test", 1_000_100).is_err());
        assert!(
            check(
                &AppMetadata {
                    kind: "nope".into(),
                    ..meta()
                },
                "db.test",
                1_000_100
            )
            .is_err()
        );
        assert!(
            check(
                &AppMetadata {
                    aud: " ".into(),
                    ..meta()
                },
                "db.test",
                1_000_100
            )
            .is_err()
        );
        assert!(check(&meta(), "db.test", 1_000_000 + 24 * 3600 + 1).is_err());
        assert!(check(&meta(), "db.test", 1_000_000 - 301).is_err());
    }

    #[test]
    fn signatures_are_verified_against_the_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let issuer =
            crate::edge::Issuer::load_or_create(&dir.path().join("k.pem"), "auth.test").unwrap();
        let jwt = issuer.sign(&meta());
        let jwks: Jwks = serde_json::from_str(issuer.jwks()).unwrap();
        assert_eq!(verify(&jwt, &jwks.keys).unwrap(), meta());
        let other =
            crate::edge::Issuer::load_or_create(&dir.path().join("o.pem"), "auth.test").unwrap();
        let foreign: Jwks = serde_json::from_str(other.jwks()).unwrap();
        assert!(verify(&jwt, &foreign.keys).is_err());
    }
}
