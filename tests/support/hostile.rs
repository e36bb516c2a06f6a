//! A hostile edge: an HTTPS server with a certificate the client trusts (its own test
//! CA), its own signing key and its own auth domain, which claims to be whatever app
//! the test says and records every request it gets. It answers what a real edge would
//! (metadata, JWKS, login redirects, refusals) so the client goes as far as it will.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tunnel::Issuer;
use tunnel::protocol::metadata::{AppMetadata, MATCH};
use tunnel::protocol::now_secs;

/// What the hostile edge claims in its metadata.
#[derive(Debug, Clone)]
pub struct Claim {
    /// `app_hostname`: the app it pretends to be.
    pub app_hostname: String,
    /// `aud`: that app's (public) AUD tag.
    pub aud: String,
    /// `auth_domain`: whose keys sign the metadata.
    pub auth_domain: String,
}

/// The running server.
pub struct Hostile {
    /// Its address (for `--connect-to`).
    pub addr: SocketAddr,
    /// The CA that signed its certificate (for `--ca-file`).
    pub ca: PathBuf,
    /// Every request head it received, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Size of the JWKS it serves: 0 for its real JWKS, else that many bytes of junk.
    pub jwks_bytes: Arc<Mutex<usize>>,
    _dir: tempfile::TempDir,
}

impl Hostile {
    /// Serve as `host` (its certificate's name), claiming `claim`.
    pub fn start(host: &str, claim: Claim) -> Hostile {
        let dir = super::tempdir();
        super::write_test_pki(dir.path(), &[host]);
        let tls = tunnel::server_config(&dir.path().join("edge.crt"), &dir.path().join("edge.key"))
            .expect("hostile TLS config");
        let issuer = Issuer::load_or_create(&dir.path().join("key.pem"), &claim.auth_domain)
            .expect("hostile key");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let jwks_bytes = Arc::new(Mutex::new(0));
        let shared = Arc::new((
            issuer,
            claim,
            host.to_string(),
            seen.clone(),
            jwks_bytes.clone(),
        ));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { return };
                let (tls, shared) = (tls.clone(), shared.clone());
                std::thread::spawn(move || {
                    let Ok(session) = rustls::ServerConnection::new(tls) else {
                        return;
                    };
                    let mut s = rustls::StreamOwned::new(session, tcp);
                    while let Some(head) = super::read_head(&mut s) {
                        let head = String::from_utf8_lossy(&head).to_string();
                        shared.3.lock().unwrap().push(head.clone());
                        let reply = answer(
                            &head,
                            &shared.0,
                            &shared.1,
                            &shared.2,
                            *shared.4.lock().unwrap(),
                        );
                        if s.write_all(&reply).and_then(|_| s.flush()).is_err() {
                            return;
                        }
                    }
                    let _ = s.read(&mut [0u8; 1]);
                });
            }
        });
        Hostile {
            addr,
            ca: dir.path().join("ca.pem"),
            seen,
            jwks_bytes,
            _dir: dir,
        }
    }

    /// `evil.test` with its own auth domain (`evil.test`), claiming to be the app
    /// `app_hostname` with AUD `aud`.
    pub fn claiming(app_hostname: &str, aud: &str) -> Hostile {
        Hostile::start(
            "evil.test",
            Claim {
                app_hostname: app_hostname.into(),
                aud: aud.into(),
                auth_domain: "evil.test".into(),
            },
        )
    }

    /// The client flags that reach it: `--connect-to ADDR --ca-file CA`.
    pub fn reach(&self) -> Vec<String> {
        vec![
            "--connect-to".into(),
            self.addr.to_string(),
            "--ca-file".into(),
            self.ca.display().to_string(),
        ]
    }

    /// Everything it received, as one string.
    pub fn transcript(&self) -> String {
        self.seen.lock().unwrap().join("\n")
    }
}

fn answer(head: &str, issuer: &Issuer, claim: &Claim, host: &str, jwks_bytes: usize) -> Vec<u8> {
    let lower = head.to_ascii_lowercase();
    let path = head.split(' ').nth(1).unwrap_or("/");
    let reply = |status: &str, headers: &str, body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head.starts_with("HEAD ") {
            r.extend_from_slice(body);
        }
        r
    };
    if lower.contains("cf-access-metadata-request: true") {
        let meta = AppMetadata {
            kind: MATCH.into(),
            hostname: host.into(),
            auth_domain: claim.auth_domain.clone(),
            aud: claim.aud.clone(),
            app_hostname: claim.app_hostname.clone(),
            iat: now_secs(),
            transfer_url: Some(format!("https://{host}")),
        };
        return reply(
            "200 OK",
            &format!("cf-access-metadata: {}\r\n", issuer.sign(&meta)),
            b"",
        );
    }
    if path.starts_with("/cdn-cgi/access/certs") {
        if jwks_bytes > 0 {
            return reply(
                "200 OK",
                "Content-Type: application/json\r\n",
                &vec![b' '; jwks_bytes],
            );
        }
        return reply(
            "200 OK",
            "Content-Type: application/json\r\n",
            issuer.jwks().as_bytes(),
        );
    }
    if path.starts_with("/transfer/") {
        return reply("500 Internal Server Error", "", b"no");
    }
    // Any other request, with or without a token: "log in" (the refusal that used to
    // make the client delete whatever it had sent).
    let location = format!(
        "https://{host}/cdn-cgi/access/login/{host}?kid={}",
        claim.aud
    );
    reply("302 Found", &format!("Location: {location}\r\n"), b"")
}
