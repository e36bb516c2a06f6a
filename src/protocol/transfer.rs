//! The encrypted hand-off (README: "Logging in"): the client makes a NaCl box key
//! pair (X25519, XSalsa20-Poly1305) whose public key (base64url) is the transfer id;
//! the edge seals `{"app_token","org_token"}` for it; the client opens it. Pure
//! functions, shared by both sides.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use crypto_box::aead::Aead;
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use serde::{Deserialize, Serialize};

/// Nonce length of XSalsa20-Poly1305.
pub const NONCE_LEN: usize = 24;

/// Why a hand-off could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// A key is not 32 bytes of base64.
    #[error("transfer key is not a 32-byte base64 value")]
    Key,
    /// The body is not base64 of nonce plus box.
    #[error("transfer body is malformed")]
    Body,
    /// The box did not open: tampered, or sealed for another key.
    #[error("transfer could not be decrypted (tampered, or sealed for another key)")]
    Open,
    /// The opened payload is not the expected JSON.
    #[error("transfer payload is not the expected JSON")]
    Payload,
}

/// What the edge hands over after a browser login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// Token for the app.
    pub app_token: String,
    /// Token for the organisation (auth domain), for later exchanges.
    pub org_token: String,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handoff { app_token: MASKED, org_token: MASKED }")
    }
}

/// A sealed hand-off, as the edge serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Standard base64 of `nonce || box`: the response body.
    pub body: String,
    /// The edge's ephemeral public key, base64url: the `service-public-key` header.
    pub service_public_key: String,
}

/// The client's key pair for one login.
pub struct KeyPair {
    secret: SecretKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair {{ id: {} }}", self.id())
    }
}

impl Default for KeyPair {
    fn default() -> Self {
        Self::generate()
    }
}

impl KeyPair {
    /// A fresh key pair from the OS random source.
    pub fn generate() -> KeyPair {
        KeyPair {
            secret: random_secret(),
        }
    }

    /// The transfer id: the public key, base64url (padded, as `cloudflared` sends it).
    pub fn id(&self) -> String {
        URL_SAFE.encode(self.secret.public_key().as_bytes())
    }

    /// Open a sealed hand-off.
    pub fn open(&self, body: &str, service_public_key: &str) -> Result<Handoff, TransferError> {
        let sender = decode_key(service_public_key)?;
        let raw = STANDARD
            .decode(body.trim())
            .map_err(|_| TransferError::Body)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(TransferError::Body);
        }
        let (nonce, boxed) = raw.split_at(NONCE_LEN);
        let plain = SalsaBox::new(&sender, &self.secret)
            .decrypt(nonce.into(), boxed)
            .map_err(|_| TransferError::Open)?;
        serde_json::from_slice(&plain).map_err(|_| TransferError::Payload)
    }
}

/// A secret key from the project's one random source (aws-lc-rs).
fn random_secret() -> SecretKey {
    let mut bytes = [0u8; crypto_box::KEY_SIZE];
    super::random_fill(&mut bytes);
    SecretKey::from(bytes)
}

/// Seal `handoff` for the client whose transfer id is `client_id`, with a fresh
/// ephemeral key of ours.
pub fn seal(handoff: &Handoff, client_id: &str) -> Result<Sealed, TransferError> {
    let client = decode_key(client_id)?;
    let ours = random_secret();
    let mut nonce = [0u8; NONCE_LEN];
    super::random_fill(&mut nonce);
    let nonce = crypto_box::Nonce::from(nonce);
    let plain = serde_json::to_vec(handoff).map_err(|_| TransferError::Payload)?;
    let boxed = SalsaBox::new(&client, &ours)
        .encrypt(&nonce, plain.as_slice())
        .map_err(|_| TransferError::Open)?;
    let mut raw = nonce.to_vec();
    raw.extend_from_slice(&boxed);
    Ok(Sealed {
        body: STANDARD.encode(raw),
        service_public_key: URL_SAFE.encode(ours.public_key().as_bytes()),
    })
}

/// Decode a 32-byte public key given as base64url (padded or not) or standard base64.
pub fn decode_key(s: &str) -> Result<PublicKey, TransferError> {
    let s = s.trim();
    let bytes = URL_SAFE
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .or_else(|_| STANDARD.decode(s))
        .map_err(|_| TransferError::Key)?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| TransferError::Key)?;
    Ok(PublicKey::from(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handoff() -> Handoff {
        Handoff {
            app_token: "a.b.c".into(),
            org_token: "d.e.f".into(),
        }
    }

    #[test]
    fn seal_then_open() {
        let kp = KeyPair::generate();
        let sealed = seal(&handoff(), &kp.id()).unwrap();
        assert_eq!(
            kp.open(&sealed.body, &sealed.service_public_key).unwrap(),
            handoff()
        );
        assert!(!format!("{:?}", handoff()).contains("a.b.c"));
    }

    #[test]
    fn tampered_or_foreign_boxes_do_not_open() {
        let kp = KeyPair::generate();
        let sealed = seal(&handoff(), &kp.id()).unwrap();
        let mut raw = STANDARD.decode(&sealed.body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            kp.open(&STANDARD.encode(&raw), &sealed.service_public_key),
            Err(TransferError::Open)
        );
        let other = KeyPair::generate();
        assert_eq!(
            other.open(&sealed.body, &sealed.service_public_key),
            Err(TransferError::Open)
        );
        assert_eq!(
            kp.open("not base64!", &sealed.service_public_key),
            Err(TransferError::Body)
        );
        assert_eq!(seal(&handoff(), "short").unwrap_err(), TransferError::Key);
    }
}
