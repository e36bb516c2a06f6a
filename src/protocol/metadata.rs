//! App discovery metadata: the claims of the `cf-access-metadata` JWT an edge returns
//! to a `HEAD` with `cf-access-metadata-request: true` (README: "Logging in").

use serde::{Deserialize, Serialize};

/// Claims of the metadata JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppMetadata {
    /// Always `"match"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The host the client asked about (no port).
    pub hostname: String,
    /// The issuer's domain: JWKS at `https://<auth_domain>/cdn-cgi/access/certs`.
    pub auth_domain: String,
    /// The app's AUD tag.
    pub aud: String,
    /// The app's hostname pattern (may hold `*`).
    pub app_hostname: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Our extension: base URL of the login hand-off service (`<base>/transfer/<id>`).
    /// Stock `cloudflared` ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_url: Option<String>,
}

/// The value of `type` in metadata claims.
pub const MATCH: &str = "match";
