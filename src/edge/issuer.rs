//! The edge's token issuer: one RSA signing key (created 0600 on first start),
//! RS256 JWTs for apps, their verification, and the JWKS we publish.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Size of a generated signing key.
pub const KEY_BITS: usize = 2048;
/// Clock skew tolerated when checking `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// A signing key that cannot be loaded or created.
#[derive(Debug, thiserror::Error)]
#[error("signing key {path}: {what}")]
pub struct KeyError {
    /// The key file.
    pub path: PathBuf,
    /// What went wrong and what to do.
    pub what: String,
}

/// Why a presented token was not accepted. The messages are safe to show a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWT, or not one of ours (wrong `alg`, unknown `kid`).
    #[error("token malformed or not issued by this edge")]
    Malformed,
    /// The signature does not verify.
    #[error("token signature invalid")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// Not valid yet.
    #[error("token not yet valid")]
    Immature,
    /// Issued for another app.
    #[error("token issued for another app")]
    Audience,
    /// Issued by another authority.
    #[error("token issued by another authority")]
    Issuer,
    /// A token of another kind (an org token or login code used as an app token).
    #[error("token of the wrong kind")]
    Kind,
}

/// `type` of app tokens.
pub const KIND_APP: &str = "app";
/// `type` of org tokens.
pub const KIND_ORG: &str = "org";
/// `type` of the short-lived codes of the org-token exchange.
pub const KIND_CODE: &str = "code";

/// An audience claim: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "x"`
    One(String),
    /// `"aud": ["x", "y"]`
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` is among the audiences.
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }
}

/// Claims of an app token, as Cloudflare Access issues them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// App AUD tag(s).
    pub aud: Audience,
    /// The user's email (absent for service identities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Service token name, for tokens minted for a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Subject.
    pub sub: String,
    /// Issuer: `https://<auth_domain>`.
    pub iss: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// `"app"` for app tokens, `"org"` for org tokens.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Signs and verifies the edge's tokens.
pub struct Issuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwks: String,
    iss: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Issuer {
    /// Load the PEM key at `path`, or create it (mode 0600, written atomically) when
    /// missing. `auth_domain` becomes the `iss` of every token.
    pub fn load_or_create(path: &Path, auth_domain: &str) -> Result<Issuer, KeyError> {
        let err = |what: String| KeyError {
            path: path.to_path_buf(),
            what,
        };
        let key = match std::fs::read_to_string(path) {
            Ok(pem) => rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
                .or_else(|_| {
                    use rsa::pkcs1::DecodeRsaPrivateKey;
                    rsa::RsaPrivateKey::from_pkcs1_pem(&pem)
                })
                .map_err(|e| {
                    err(format!(
                        "not an RSA private key in PEM: {e}; remove it to have a new one made"
                    ))
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(path).map_err(err)?,
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        Issuer::from_key(&key, auth_domain).map_err(err)
    }

    fn from_key(key: &rsa::RsaPrivateKey, auth_domain: &str) -> Result<Issuer, String> {
        let encoding = EncodingKey::from_rsa_der(&rsa_pkcs1_der(key)?);
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        let decoding = DecodingKey::from_rsa_raw_components(&n, &e);
        let mut h = Sha256::new();
        h.update(&n);
        h.update(&e);
        let kid: String = h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let jwks = serde_json::json!({
            "keys": [{
                "kid": kid,
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "n": URL_SAFE_NO_PAD.encode(&n),
                "e": URL_SAFE_NO_PAD.encode(&e),
            }]
        })
        .to_string();
        Ok(Issuer {
            encoding,
            decoding,
            kid,
            jwks,
            iss: format!("https://{auth_domain}"),
        })
    }

    /// The JWKS document served at `/cdn-cgi/access/certs`.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The `iss` of our tokens.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// Sign `claims` (RS256, our `kid`).
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .expect("RS256 signing with a valid key cannot fail")
    }

    /// Mint an app token for `aud` naming `email`, valid for `ttl`.
    pub fn mint(&self, aud: &str, email: &str, ttl: Duration) -> String {
        self.mint_kind(aud, email, ttl, KIND_APP)
    }

    /// Verify an app token: RS256 only, our key, our issuer, `type` "app", `aud`
    /// contains `aud`, not expired. Fails closed on anything else.
    pub fn verify(&self, token: &str, aud: &str) -> Result<Claims, VerifyError> {
        self.verify_kind(token, aud, KIND_APP)
    }

    /// Verify an org token (issued at browser login for the whole auth domain).
    pub fn verify_org(&self, token: &str) -> Result<Claims, VerifyError> {
        self.verify_kind(token, &self.org_aud(), KIND_ORG)
    }

    /// The audience of our org tokens.
    pub fn org_aud(&self) -> String {
        super::config::derive_aud(&format!("org:{}", self.iss))
    }

    /// Mint an org token naming `email`, valid for `ttl`.
    pub fn mint_org(&self, email: &str, ttl: Duration) -> String {
        self.mint_kind(&self.org_aud(), email, ttl, KIND_ORG)
    }

    /// Mint a token of `kind` (`app`, `org`, `code`) for `aud` naming `email`.
    pub fn mint_kind(&self, aud: &str, email: &str, ttl: Duration, kind: &str) -> String {
        let now = now_secs();
        self.sign(&Claims {
            aud: Audience::Many(vec![aud.to_string()]),
            email: Some(email.to_string()),
            common_name: None,
            sub: email.to_string(),
            iss: self.iss.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            kind: kind.into(),
        })
    }

    /// Verify a token of `kind` for `aud` (see [`Issuer::verify`]).
    pub fn verify_kind(&self, token: &str, aud: &str, kind: &str) -> Result<Claims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if header.alg != Algorithm::RS256 || header.kid.as_deref().is_some_and(|k| k != self.kid) {
            return Err(VerifyError::Malformed);
        }
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_audience(&[aud]);
        v.set_issuer(&[&self.iss]);
        v.set_required_spec_claims(&["exp", "aud", "iss"]);
        use jsonwebtoken::errors::ErrorKind as K;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                K::InvalidSignature => VerifyError::Signature,
                K::ExpiredSignature => VerifyError::Expired,
                K::ImmatureSignature => VerifyError::Immature,
                K::InvalidAudience => VerifyError::Audience,
                K::InvalidIssuer => VerifyError::Issuer,
                _ => VerifyError::Malformed,
            })?;
        if claims.kind != kind {
            return Err(VerifyError::Kind);
        }
        Ok(claims)
    }
}

fn rsa_pkcs1_der(key: &rsa::RsaPrivateKey) -> Result<Vec<u8>, String> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    Ok(key
        .to_pkcs1_der()
        .map_err(|e| e.to_string())?
        .as_bytes()
        .to_vec())
}

/// Generate a key and write it with mode 0600, atomically: a crash leaves either no
/// file or a whole one. If another process created it meanwhile, theirs is used.
fn create_key(path: &Path) -> Result<rsa::RsaPrivateKey, String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS)
        .map_err(|e| format!("cannot generate: {e}"))?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode: {e}"))?;
    // NamedTempFile is created with mode 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
    tmp.write_all(pem.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| format!("cannot write: {e}"))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            tracing::info!("created signing key {}", path.display());
            Ok(key)
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
            rsa::RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| format!("not a PEM RSA key: {e}"))
        }
        Err(e) => Err(format!("cannot save: {}", e.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_0600_and_tokens_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let a = Issuer::load_or_create(&path, "auth.test").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let b = Issuer::load_or_create(&path, "auth.test").unwrap();
        assert_eq!(a.kid, b.kid, "the key is reused, not regenerated");

        let token = a.mint("aud1", "alice@example.test", Duration::from_secs(60));
        let claims = b.verify(&token, "aud1").unwrap();
        assert_eq!(claims.email.as_deref(), Some("alice@example.test"));
        assert_eq!(b.verify(&token, "aud2"), Err(VerifyError::Audience));

        let expired = a.sign(&Claims {
            exp: now_secs() - 3600,
            ..claims.clone()
        });
        assert_eq!(a.verify(&expired, "aud1"), Err(VerifyError::Expired));

        let other = Issuer::load_or_create(&dir.path().join("other.pem"), "auth.test").unwrap();
        let foreign = other.mint("aud1", "mallory@example.test", Duration::from_secs(60));
        assert_eq!(
            a.verify(&foreign, "aud1"),
            Err(VerifyError::Malformed),
            "unknown kid"
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_sig = foreign.split('.').nth(2).unwrap();
        parts[2] = forged_sig;
        assert_eq!(
            a.verify(&parts.join("."), "aud1"),
            Err(VerifyError::Signature)
        );

        // Other kinds are never app tokens, even with the right aud.
        let code = a.mint_kind(
            "aud1",
            "alice@example.test",
            Duration::from_secs(60),
            KIND_CODE,
        );
        assert_eq!(a.verify(&code, "aud1"), Err(VerifyError::Kind));
        let org = a.mint_org("alice@example.test", Duration::from_secs(60));
        assert!(a.verify_org(&org).is_ok());
        assert_eq!(a.verify_org(&token), Err(VerifyError::Audience));
    }

    #[test]
    fn alg_none_and_hs256_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Issuer::load_or_create(&dir.path().join("k.pem"), "auth.test").unwrap();
        let claims = r#"{"aud":"x","sub":"a","iss":"https://auth.test","iat":0,"nbf":0,"exp":99999999999,"type":"app"}"#;
        let body = URL_SAFE_NO_PAD.encode(claims);
        for header in [r#"{"alg":"none"}"#, r#"{"alg":"HS256"}"#] {
            let t = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(header));
            assert!(a.verify(&t, "x").is_err());
        }
    }
}
