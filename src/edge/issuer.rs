//! The edge's token issuer: one RSA signing key (created 0600 on first start),
//! RS256 JWTs for apps, their verification, and the JWKS we publish.
//!
//! RSA is aws-lc-rs (constant-time, the project's one crypto provider). The key is
//! saved as PKCS#8 PEM; PKCS#1 PEM keys (`BEGIN RSA PRIVATE KEY`, written by older
//! versions and by `openssl genrsa -traditional`) still load.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

/// Size of a generated signing key.
pub const KEY_SIZE: KeySize = KeySize::Rsa2048;
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

pub use crate::protocol::{Audience, now_secs};

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
    key: KeyPair,
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

impl Issuer {
    /// Load the PEM key at `path`, or create it (mode 0600, written atomically) when
    /// missing. `auth_domain` becomes the `iss` of every token.
    pub fn load_or_create(path: &Path, auth_domain: &str) -> Result<Issuer, KeyError> {
        let err = |what: String| KeyError {
            path: path.to_path_buf(),
            what,
        };
        let key = match std::fs::read(path) {
            Ok(pem) => parse_key(&pem)
                .map_err(|e| err(format!("{e}; remove it to have a new one made")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(path).map_err(err)?,
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        Ok(Issuer::from_key(key, auth_domain))
    }

    fn from_key(key: KeyPair, auth_domain: &str) -> Issuer {
        let PublicKeyComponents { n, e } =
            PublicKeyComponents::<Vec<u8>>::from(aws_lc_rs::signature::KeyPair::public_key(&key));
        let decoding = DecodingKey::from_rsa_raw_components(&n, &e);
        let kid = crate::protocol::hex(&crate::protocol::sha256(&[&n[..], &e[..]].concat())[..16]);
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
        Issuer {
            key,
            decoding,
            kid,
            jwks,
            iss: format!("https://{auth_domain}"),
        }
    }

    /// The JWKS document served at `/cdn-cgi/access/certs`.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The `iss` of our tokens.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// Sign `claims` (RS256, our `kid`). The key is held parsed (jsonwebtoken's
    /// own `encode` would parse and check the DER key again on every call).
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let part = |v: Vec<u8>| URL_SAFE_NO_PAD.encode(v);
        let mut jwt = part(serde_json::to_vec(&header).expect("a JWT header serializes"));
        jwt.push('.');
        jwt.push_str(&part(serde_json::to_vec(claims).expect("claims serialize")));
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                jwt.as_bytes(),
                &mut sig,
            )
            .expect("RS256 signing with a valid key cannot fail");
        jwt.push('.');
        jwt.push_str(&part(sig));
        jwt
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
        let claims: Claims = self.verify_as(token, aud)?;
        if claims.kind != kind {
            return Err(VerifyError::Kind);
        }
        Ok(claims)
    }

    /// Verify signature, `alg`, `kid`, `iss`, `aud` and times of a token, and
    /// decode its claims as `T` (the caller checks the kind).
    pub fn verify_as<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        aud: &str,
    ) -> Result<T, VerifyError> {
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
        jsonwebtoken::decode::<T>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                K::InvalidSignature => VerifyError::Signature,
                K::ExpiredSignature => VerifyError::Expired,
                K::ImmatureSignature => VerifyError::Immature,
                K::InvalidAudience => VerifyError::Audience,
                K::InvalidIssuer => VerifyError::Issuer,
                _ => VerifyError::Malformed,
            })
    }
}

/// An RSA private key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`, what we write) or
/// PKCS#1 (`BEGIN RSA PRIVATE KEY`, what older versions wrote).
fn parse_key(pem: &[u8]) -> Result<KeyPair, String> {
    let der =
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("not a PEM private key: {e}"))?;
    let key = match &der {
        PrivateKeyDer::Pkcs8(d) => KeyPair::from_pkcs8(d.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(d) => KeyPair::from_der(d.secret_pkcs1_der()),
        _ => return Err("not an RSA private key (an EC key?)".into()),
    };
    key.map_err(|e| format!("not a usable RSA private key: {e}"))
}

/// PKCS#8 DER as PEM (`BEGIN PRIVATE KEY`, 64 base64 characters a line).
fn pkcs8_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Generate a key and write it with mode 0600, atomically: a crash leaves either no
/// file or a whole one. If another process created it meanwhile, theirs is used.
fn create_key(path: &Path) -> Result<KeyPair, String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let key = KeyPair::generate(KEY_SIZE).map_err(|e| format!("cannot generate: {e}"))?;
    let der = key.as_der().map_err(|e| format!("cannot encode: {e}"))?;
    let pem = pkcs8_pem(der.as_ref());
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
            let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
            parse_key(&pem)
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
    fn key_files_of_older_versions_keep_working() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let dir = tempfile::tempdir().unwrap();
        let mut tokens = Vec::new();
        for name in ["signing-key-pkcs1.pem", "signing-key-pkcs8.pem"] {
            let path = dir.path().join(name);
            std::fs::copy(fixtures.join(name), &path).unwrap();
            let before = std::fs::read(&path).unwrap();
            let issuer = Issuer::load_or_create(&path, "auth.test").unwrap();
            assert_eq!(issuer.kid, "cee95927dc664db51794a79726cb716d", "{name}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                before,
                "{name} is left as it was"
            );
            tokens.push(issuer.mint("aud1", "alice@example.test", Duration::from_secs(60)));
            let other = Issuer::load_or_create(&path, "auth.test").unwrap();
            assert!(other.verify(tokens.last().unwrap(), "aud1").is_ok());
        }
        // Each format verifies the other's tokens: one key.
        let pkcs1 = Issuer::load_or_create(&dir.path().join("signing-key-pkcs1.pem"), "auth.test");
        assert!(pkcs1.unwrap().verify(&tokens[1], "aud1").is_ok());
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let err = Issuer::load_or_create(&garbage, "auth.test").unwrap_err();
        assert!(err.to_string().contains("remove it"), "{err}");
    }

    #[test]
    fn new_keys_are_saved_as_pkcs8_pem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        Issuer::load_or_create(&path, "auth.test").unwrap();
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        assert!(pem.lines().all(|l| l.len() <= 64));
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
