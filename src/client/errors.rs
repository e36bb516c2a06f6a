//! What went wrong opening a WebSocket to the edge, and what to do about it: the
//! [`DialError`] every dial returns (each variant with its exit code), the reading
//! of a refusal (status, `Location`, `cf-ray`, the edge's stated reason) and of a
//! failed TLS handshake.

use std::io;

use http::StatusCode;

use super::target::Credentials;
use crate::{exit, protocol};

/// Why the WebSocket to the edge could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Name resolution failed.
    #[error("cannot resolve {addr}: {source}; check --hostname (or --connect-to)")]
    Resolve {
        /// What was looked up.
        addr: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// No address accepted the TCP connection.
    #[error("cannot connect to the edge at {addr}: {source}; check that it is up and reachable")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The last connect error.
        #[source]
        source: io::Error,
    },
    /// The HTTP proxy from the environment refused or failed the `CONNECT`.
    #[error(
        "the proxy {proxy} could not open a tunnel to {addr}: {detail}; check https_proxy/http_proxy and no_proxy"
    )]
    Proxy {
        /// The proxy.
        proxy: String,
        /// The edge address asked for.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// A step took too long.
    #[error(
        "timed out {stage} the edge at {addr} after {secs} s; check the network or --connect-to"
    )]
    Timeout {
        /// The address dialled.
        addr: String,
        /// What we were doing.
        stage: &'static str,
        /// The limit, in seconds.
        secs: u64,
    },
    /// The TLS handshake failed (certificate not trusted, name mismatch, ...).
    #[error("TLS with {host} ({addr}) failed: {detail}{hint}")]
    Tls {
        /// The app hostname (SNI).
        host: String,
        /// The address dialled.
        addr: String,
        /// What rustls said.
        detail: String,
        /// What to do, for this cause ([`tls_hint`]).
        hint: &'static str,
    },
    /// The WebSocket handshake failed at the protocol level.
    #[error("WebSocket handshake with {url} failed: {detail}; is this a tunnel edge?")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The app needs a login and no credentials were given.
    #[error(
        "{host} needs a login ({detail}); pass a service token with --service-token-id and --service-token-secret, or an Access token with --token"
    )]
    LoginRequired {
        /// The app hostname.
        host: String,
        /// Status, redirect and ray.
        detail: String,
    },
    /// The service token was refused. Never falls back to a browser login.
    #[error(
        "the edge refused service token {id:?} for {host} ({detail}); check --service-token-id and --service-token-secret, and that the app's policy allows this token"
    )]
    ServiceTokenRefused {
        /// The app hostname.
        host: String,
        /// The client id (not secret).
        id: String,
        /// Status, redirect, reason and ray.
        detail: String,
    },
    /// The Access token was refused (expired, wrongly signed, for another app).
    #[error(
        "the edge refused the access token for {host} ({detail}); it is expired or not valid for this app: get a new one"
    )]
    TokenRefused {
        /// The app hostname.
        host: String,
        /// Status, redirect, reason and ray.
        detail: String,
    },
    /// The edge could not reach the origin.
    #[error(
        "the edge could not reach the origin of {host} ({detail}); check that the service behind the edge is running"
    )]
    Origin {
        /// The app hostname.
        host: String,
        /// Status, reason and ray.
        detail: String,
    },
    /// The edge refused for another reason (policy, unknown app, bad destination).
    #[error("the edge refused the connection to {host} ({detail})")]
    Refused {
        /// The app hostname.
        host: String,
        /// Status, reason and ray.
        detail: String,
    },
}

impl DialError {
    /// The process exit code for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            DialError::Resolve { .. }
            | DialError::Connect { .. }
            | DialError::Timeout { .. }
            | DialError::Proxy { .. }
            | DialError::Protocol { .. } => exit::NETWORK,
            DialError::Tls { .. } => exit::TLS,
            DialError::LoginRequired { .. } => exit::LOGIN_NEEDED,
            DialError::ServiceTokenRefused { .. } | DialError::TokenRefused { .. } => {
                exit::AUTH_REFUSED
            }
            DialError::Origin { .. } => exit::ORIGIN,
            DialError::Refused { .. } => exit::EDGE_REFUSED,
        }
    }
}

/// What to do about a failed TLS handshake, by its cause: only an untrusted issuer
/// is fixed with `--ca-file`.
pub fn tls_hint(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error as E};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
        Some(E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => {
            "; the edge's certificate is for another name: check --hostname, or give the edge a certificate that names this host"
        }
        Some(E::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "; if the edge uses a private CA, pass it with --ca-file",
        Some(E::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        )) => {
            "; the edge's certificate has expired or is not valid yet: renew it, or check this machine's clock"
        }
        Some(E::InvalidMessage(_)) => {
            "; the edge does not speak TLS on this port: for a plain-HTTP edge use an http:// hostname"
        }
        _ => "",
    }
}

/// Turn a non-101 handshake response into the error that tells the user what to do.
pub fn classify(
    host: &str,
    credentials: &Credentials,
    response: &http::Response<Option<Vec<u8>>>,
) -> DialError {
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let location = header("location");
    let mut detail = format!("HTTP {}", status.as_u16());
    if let Some(reason) = status.canonical_reason() {
        detail.push(' ');
        detail.push_str(reason);
    }
    if let Some(loc) = &location {
        detail.push_str(&format!(", redirect to {}", one_line(loc)));
    }
    if let Some(reason) = header(protocol::REFUSAL) {
        detail.push_str(&format!(", edge says: {}", one_line(&reason)));
    }
    if let Some(ray) = header(protocol::CF_RAY) {
        detail.push_str(&format!(", cf-ray {}", one_line(&ray)));
    }
    let host = host.to_string();
    let login = location.as_deref().is_some_and(protocol::is_login_redirect);
    let auth_refusal = login || status == StatusCode::UNAUTHORIZED;
    match (credentials, auth_refusal) {
        (Credentials::ServiceToken { id, .. }, true) => DialError::ServiceTokenRefused {
            host,
            id: id.clone(),
            detail,
        },
        (Credentials::Token(_), true) => DialError::TokenRefused { host, detail },
        (Credentials::None | Credentials::Login(_), true) => {
            DialError::LoginRequired { host, detail }
        }
        _ if matches!(status.as_u16(), 502..=504) => DialError::Origin { host, detail },
        _ => DialError::Refused { host, detail },
    }
}

/// Keep untrusted header text on one short line.
fn one_line(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(300).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::target::Target;
    use crate::client::upgrade::handshake_request;
    use crate::secret::Secret;

    fn response(status: u16, headers: &[(&str, &str)]) -> http::Response<Option<Vec<u8>>> {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(None).unwrap()
    }

    #[test]
    fn login_redirect_with_a_service_token_is_a_refusal_not_a_login() {
        let t = Credentials::ServiceToken {
            id: "ci.access".into(),
            secret: Secret::new("x"),
        };
        let r = response(
            302,
            &[
                ("location", "https://a.test/cdn-cgi/access/login/db?kid=1"),
                ("cf-ray", "8a1-LHR"),
            ],
        );
        let e = classify("db.example.com", &t, &r);
        assert_eq!(e.exit_code(), exit::AUTH_REFUSED);
        let msg = e.to_string();
        assert!(
            msg.contains("HTTP 302") && msg.contains("cf-ray 8a1-LHR") && msg.contains("ci.access")
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn statuses_map_to_distinct_errors() {
        let t =
            |r: &http::Response<Option<Vec<u8>>>| classify("db.example.com", &Credentials::None, r);
        let login = response(
            302,
            &[("location", "https://a.test/cdn-cgi/access/login/db")],
        );
        assert_eq!(t(&login).exit_code(), exit::LOGIN_NEEDED);
        assert_eq!(t(&response(502, &[])).exit_code(), exit::ORIGIN);
        assert_eq!(t(&response(403, &[])).exit_code(), exit::EDGE_REFUSED);
    }

    #[test]
    fn secrets_are_sent_but_not_debug_printed() {
        let t = Target::builder(
            crate::client::target::AppUrl::parse("db.example.com").unwrap(),
            crate::tls::client_config(None).unwrap(),
        )
        .credentials(Credentials::ServiceToken {
            id: "id".into(),
            secret: Secret::new("s3cret"),
        })
        .build();
        let req = handshake_request(&t, None);
        assert_eq!(req.headers()[protocol::CLIENT_SECRET], "s3cret");
        assert!(!format!("{req:?}").contains("s3cret"));
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
