//! `tunnel doctor HOSTNAME`: walk the path to an app one step at a time and say where
//! it breaks, with a fix for each step: name resolution, proxy, TCP connect, TLS, the
//! edge's answer to the upgrade, app discovery and its keys, the cached token, and
//! the clock against the edge's. The exit code is that of the first failing step (0
//! when a tunnel would work), as documented for every other command.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::auth::{Authenticator, binding, jwt};
use crate::client::{Credentials, DialError, Target};
use crate::exit;
use crate::secret::Secret;

/// Largest clock difference to the edge that still passes (token `exp`/`nbf` checks
/// allow 30 s; a minute is already worth fixing).
pub const MAX_SKEW_SECS: u64 = 60;
/// Limit for the connect step.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Which step (`resolve`, `proxy`, `connect`, `tls`, `upgrade`, `discovery`,
    /// `token`, `clock`).
    pub step: &'static str,
    /// `ok`, `fail`, `warn` or `skip`.
    pub status: &'static str,
    /// What was found.
    pub detail: String,
    /// What to do (failures and warnings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The exit code this failure maps to.
    #[serde(skip)]
    pub code: u8,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The app URL as dialled.
    pub url: String,
    /// Whether a tunnel would work.
    pub ok: bool,
    /// The process exit code: the first failing step's, or 0.
    pub exit_code: u8,
    /// The steps, in path order.
    pub steps: Vec<Step>,
}

impl Report {
    /// The report for people: one line per step, the fix under each failure.
    pub fn text(&self) -> String {
        let mut out = format!("tunnel doctor {}\n", self.url);
        for s in &self.steps {
            out.push_str(&format!("  {:<5} {:<10} {}\n", s.status, s.step, s.detail));
            if let Some(fix) = &s.fix {
                out.push_str(&format!("        fix: {fix}\n"));
            }
        }
        out.push_str(if self.ok {
            "a tunnel to this app would work\n"
        } else {
            "a tunnel to this app would not work: see the first failing step\n"
        });
        out
    }
}

fn ok(step: &'static str, detail: String) -> Step {
    Step {
        step,
        status: "ok",
        detail,
        fix: None,
        code: exit::OK,
    }
}

fn fail(step: &'static str, code: u8, detail: String, fix: String) -> Step {
    Step {
        step,
        status: "fail",
        detail,
        fix: Some(fix),
        code,
    }
}

fn note(step: &'static str, status: &'static str, detail: String, fix: Option<String>) -> Step {
    Step {
        step,
        status,
        detail,
        fix,
        code: exit::OK,
    }
}

/// Walk the path to `target`. Its login flow (when no service token was given) is
/// used read-only: doctor never logs in and never deletes a token.
pub async fn run(target: &Target) -> Report {
    let auth = target.credentials().login().map(|a| &**a);
    let mut steps = Vec::new();
    let app_url = format!("{}://{}/", target.app().http_scheme(), target.host_header());
    transport(target, &mut steps).await;
    let reachable = steps.iter().all(|s| s.status != "fail");
    let mut token: Option<Secret> = None;
    let mut later = Vec::new();
    if reachable {
        if let Some(auth) = auth {
            match auth.probe().await {
                Ok((info, date)) => {
                    later.push(ok(
                        "discovery",
                        format!(
                            "app {} (aud {}), metadata signed by {} and verified with its keys",
                            info.meta.app_hostname, info.meta.aud, info.meta.auth_domain
                        ),
                    ));
                    let (step, fresh) = cached_token(auth, &info.meta, &app_url);
                    token = fresh;
                    later.push(step);
                    later.push(clock(date));
                }
                Err(e) => {
                    later.push(fail(
                        "discovery",
                        e.exit_code(),
                        e.to_string(),
                        "the edge's app metadata must verify with its auth domain's keys; check --hostname, and --ca-file if the auth domain uses a private CA".into(),
                    ));
                }
            }
        } else {
            later.push(note(
                "discovery",
                "skip",
                "a service token or --token is used: no login, no discovery".into(),
                None,
            ));
        }
        steps.push(upgrade(target, token.as_ref(), &app_url).await);
    }
    steps.extend(later);
    let exit_code = steps
        .iter()
        .find(|s| s.status == "fail")
        .map_or(exit::OK, |s| s.code);
    Report {
        url: target.url(),
        ok: exit_code == exit::OK,
        exit_code,
        steps,
    }
}

/// Resolution, proxy, TCP connect; TLS is judged by the upgrade's dial.
async fn transport(target: &Target, steps: &mut Vec<Step>) {
    let proxy = target.proxy();
    let proxy_step = match proxy {
        Some(p) => ok(
            "proxy",
            format!("through {} (from the environment)", p.addr()),
        ),
        None => note("proxy", "ok", "none (direct)".into(), None),
    };
    let dial_to = proxy.map_or_else(|| target.dial_addr(), |p| p.addr().to_string());
    let resolved: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(&dial_to).await {
        Ok(a) => a.collect(),
        Err(e) => {
            steps.push(fail(
                "resolve",
                exit::NETWORK,
                format!("{dial_to}: {e}"),
                "check the hostname's spelling and DNS, or pass --connect-to HOST:PORT".into(),
            ));
            steps.push(proxy_step);
            return;
        }
    };
    let shown: Vec<String> = resolved.iter().map(|a| a.to_string()).collect();
    steps.push(ok("resolve", format!("{dial_to} -> {}", shown.join(", "))));
    steps.push(proxy_step);
    let started = Instant::now();
    let mut last = None;
    for a in &resolved {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(a)).await {
            Ok(Ok(_)) => {
                let ms = started.elapsed().as_millis();
                return steps.push(ok("connect", format!("{a} accepted in {ms} ms")));
            }
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_) => last = Some(format!("no answer in {} s", CONNECT_TIMEOUT.as_secs())),
        }
    }
    steps.push(fail(
        "connect",
        exit::NETWORK,
        format!("{dial_to}: {}", last.unwrap_or_default()),
        "the edge is down or unreachable from here: check that it runs, the port, and any firewall"
            .into(),
    ));
}

/// TLS and the edge's answer to a WebSocket upgrade (a stream opened and closed at
/// once when it is accepted).
async fn upgrade(target: &Target, token: Option<&Secret>, app_url: &str) -> Step {
    match crate::client::probe(target, token).await {
        Ok(()) => {
            let how = match (target.credentials(), token) {
                (_, Some(_)) => "with the cached token",
                (Credentials::ServiceToken { .. }, _) => "with the service token",
                (Credentials::Token(_), _) => "with --token",
                (Credentials::None | Credentials::Login(_), None) => "without credentials",
            };
            let tls = if target.is_tls() {
                "TLS verified; "
            } else {
                ""
            };
            ok(
                "upgrade",
                format!("{tls}101 Switching Protocols {how}: a tunnel would work"),
            )
        }
        Err(e) => {
            let code = e.exit_code();
            let (step, fix) = match &e {
                DialError::Tls { .. } => ("tls", "see the hint above; `--ca-file CA.pem` helps only when the edge's CA is private".to_string()),
                DialError::LoginRequired { .. } => ("upgrade", format!("run `tunnel login {app_url}` (or give a service token)")),
                DialError::TokenRefused { .. } => ("upgrade", format!("the token was refused: run `tunnel login {app_url}` for a new one")),
                DialError::ServiceTokenRefused { .. } => ("upgrade", "check the service token's id and secret, and that the app allows it".into()),
                DialError::Origin { .. } => ("upgrade", "the edge is fine; the service behind it is down: start it".into()),
                DialError::Refused { .. } => ("upgrade", "the edge refuses this app or identity: check --hostname, and ask the app's owner for access".into()),
                _ => ("upgrade", "check the network path to the edge".into()),
            };
            fail(step, code, e.to_string(), fix)
        }
    }
}

/// The cached token for this app, read without deleting anything: present, for this
/// app and issuer, not expired.
fn cached_token(
    auth: &Authenticator,
    meta: &crate::protocol::metadata::AppMetadata,
    app_url: &str,
) -> (Step, Option<Secret>) {
    let files = auth.cache().all_token_files().unwrap_or_default();
    let now = jwt::now_secs();
    let mut expired = None;
    let path = auth.cache().app_token_path(&meta.app_hostname, &meta.aud);
    let login = format!("run `tunnel login {app_url}`");
    for file in files.iter().filter(|f| **f == path) {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let Ok(claims) = jwt::claims(&text) else {
            return (
                fail(
                    "token",
                    exit::LOGIN_NEEDED,
                    format!("{} is not a token", file.display()),
                    login,
                ),
                None,
            );
        };
        if !binding::app_token_fits(&claims, meta) {
            return (
                fail(
                    "token",
                    exit::LOGIN_NEEDED,
                    format!(
                        "{} was not issued by {} for this app",
                        file.display(),
                        meta.auth_domain
                    ),
                    login,
                ),
                None,
            );
        }
        if claims.exp <= now {
            expired = Some((claims, file.clone()));
            continue;
        }
        let who = claims.email.clone().unwrap_or_else(|| "a service".into());
        let mins = (claims.exp - now) / 60;
        let detail = format!(
            "{who}, expires {} (in {mins} min), issuer and aud fit; {}",
            jwt::rfc3339(claims.exp),
            file.display()
        );
        return (ok("token", detail), Some(Secret::new(text.trim())));
    }
    match expired {
        Some((c, file)) => (
            fail(
                "token",
                exit::LOGIN_NEEDED,
                format!("expired at {} ({})", jwt::rfc3339(c.exp), file.display()),
                login,
            ),
            None,
        ),
        None => (
            note(
                "token",
                "warn",
                "no cached token: the first connection will log in".into(),
                Some(login),
            ),
            None,
        ),
    }
}

fn clock(edge: Option<u64>) -> Step {
    let Some(edge) = edge else {
        return note("clock", "skip", "the edge sent no Date header".into(), None);
    };
    let now = jwt::now_secs();
    let skew = now.abs_diff(edge);
    if skew <= MAX_SKEW_SECS {
        ok("clock", format!("within {skew} s of the edge's"))
    } else {
        let side = if now > edge { "ahead of" } else { "behind" };
        note(
            "clock",
            "warn",
            format!("{skew} s {side} the edge's: tokens may look expired or not yet valid"),
            Some("set this machine's clock (NTP)".into()),
        )
    }
}
