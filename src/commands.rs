//! The token commands: `login`, `token`, `logout` and `curl`. Each prints one JSON
//! object with `--json` (the token and what it says, or `{"error": ...}`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::access::auth_for;
use crate::auth::store::Store;
use crate::auth::{AuthError, Authenticator, jwt};
use crate::cli::{AuthArgs, CurlArgs, LoginArgs, LogoutArgs, TokenArgs};
use crate::client::target::AppUrl;
use crate::console::{Console, Notice};
use crate::error::Error;

/// Build the login flow for the app at `url` from the shared flags.
pub fn authenticator(
    url: &str,
    args: &AuthArgs,
    interactive: bool,
    notice: Notice,
) -> Result<Authenticator, Error> {
    let connect_to = crate::access::connect_to(&args.edge)?;
    authenticator_via(url, args, connect_to, interactive, notice)
}

/// [`authenticator`] with `--connect-to` already checked.
fn authenticator_via(
    url: &str,
    args: &AuthArgs,
    connect_to: Option<String>,
    interactive: bool,
    notice: Notice,
) -> Result<Authenticator, Error> {
    let app = AppUrl::parse(url)?;
    auth_for(
        &app,
        crate::tls::client_config(args.edge.ca_file.as_deref())?,
        &args.edge,
        connect_to,
        interactive,
        None,
        notice,
    )
}

/// What `--json` prints for a token.
fn token_json(app: &str, token: &str, path: &Path, aud: &str) -> serde_json::Value {
    let claims = jwt::claims(token).ok();
    json!({
        "token": token,
        "app": app,
        "aud": aud,
        "email": claims.as_ref().and_then(|c| c.email.clone()),
        "expiry": claims.as_ref().map(|c| jwt::rfc3339(c.exp)),
        "token_file": path.display().to_string(),
    })
}

/// `tunnel login URL`.
pub async fn login(
    args: LoginArgs,
    shutdown: CancellationToken,
    console: &mut Console,
) -> Result<(), Error> {
    let auth = authenticator(&args.url, &args.auth, true, console.notice())?;
    let obtained = tokio::select! {
        r = auth.token(None) => r.map_err(Error::Auth)?,
        _ = shutdown.cancelled() => return Err(Error::Interrupted),
    };
    let token = obtained.token.expose();
    if args.auth.json {
        console.line(token_json(
            &args.url,
            token,
            &obtained.path,
            &obtained.info.meta.aud,
        ))?;
    } else if args.print {
        console.line(token)?;
    } else if !args.quiet {
        let who = jwt::claims(token)
            .ok()
            .and_then(|c| c.email)
            .unwrap_or_default();
        console.note(&format!(
            "logged in to {} {who}; token cached in {}",
            args.url,
            obtained.path.display()
        ));
    }
    Ok(())
}

/// `tunnel token --app URL`: the cached token only.
pub async fn token(args: TokenArgs, console: &mut Console) -> Result<(), Error> {
    let auth = authenticator(&args.app, &args.auth, false, console.notice())?;
    match auth.cached().await.map_err(Error::Auth)? {
        Some(c) => {
            let aud = c.claims.aud_string();
            if args.auth.json {
                console.line(token_json(&args.app, c.token.expose(), &c.path, &aud))?;
            } else {
                console.line(c.token.expose())?;
            }
            Ok(())
        }
        None => Err(Error::Auth(AuthError::LoginNeeded { app: args.app })),
    }
}

/// `tunnel logout URL` or `tunnel logout --all`.
pub async fn logout(args: LogoutArgs, console: &mut Console) -> Result<(), Error> {
    let removed: Vec<PathBuf> = match &args.url {
        Some(url) if !args.all => authenticator(url, &args.auth, false, console.notice())?
            .logout()
            .await
            .map_err(Error::Auth)?,
        _ => {
            let dir = args
                .auth
                .edge
                .token_dir
                .clone()
                .unwrap_or_else(Store::default_dir);
            if !dir.exists() {
                Vec::new()
            } else {
                let store = Store::open(&dir).map_err(|e| Error::Auth(e.into()))?;
                let files = store.all_token_files().map_err(|e| Error::Auth(e.into()))?;
                for f in &files {
                    store.remove(f).map_err(|e| Error::Auth(e.into()))?;
                }
                files
            }
        }
    };
    if args.auth.json {
        let files: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        console.line(json!({ "app": args.url, "removed": files }))?;
    } else {
        console.note(&format!("removed {} cached token(s)", removed.len()));
    }
    Ok(())
}

/// `tunnel curl URL [curl args...]`: the token goes in a 0600 header file (`-H
/// @file`), never on curl's command line; `--connect-to` and `--ca-file` reach curl
/// as `--connect-to ::HOST:PORT` and `--cacert`; curl's exit code is passed through.
pub async fn curl(
    args: CurlArgs,
    shutdown: CancellationToken,
    console: &Console,
) -> Result<u8, Error> {
    // Checked once: the same address reaches the edge (for the token) and curl.
    let connect_to = crate::access::connect_to(&args.auth.edge)?;
    let auth = Arc::new(authenticator_via(
        &args.url,
        &args.auth,
        connect_to.clone(),
        true,
        console.notice(),
    )?);
    let obtained = tokio::select! {
        r = auth.token(None) => r.map_err(Error::Auth)?,
        _ = shutdown.cancelled() => return Err(Error::Interrupted),
    };
    let mut header = tempfile::Builder::new()
        .prefix("tunnel-curl-")
        .tempfile()
        .map_err(|e| Error::Io(format!("cannot create a header file: {e}")))?;
    use std::io::Write;
    writeln!(
        header,
        "{}: {}",
        crate::protocol::ACCESS_TOKEN,
        obtained.token.expose()
    )
    .map_err(|e| Error::Io(format!("cannot write the header file: {e}")))?;
    let mut curl = tokio::process::Command::new("curl");
    curl.arg("-H").arg(format!("@{}", header.path().display()));
    // The same flags reach the app as they reached the edge for the token.
    if let Some(c) = &connect_to {
        curl.arg("--connect-to").arg(format!("::{c}"));
    }
    // And the same route: our proxy resolver decides for curl too (curl's own
    // reading of the environment has other no_proxy rules).
    let app = AppUrl::parse(&args.url)?;
    let route = crate::proxy::Proxies::for_reach(connect_to.as_deref())
        .route(app.is_tls(), app.host())
        .map_err(|e| Error::Usage(e.to_string()))?;
    let _proxy_header = match &route {
        None => {
            curl.arg("--noproxy").arg("*");
            None
        }
        Some(proxy) => {
            curl.arg("--proxy").arg(format!("http://{}", proxy.addr()));
            // Credentials through a 0600 file too, never on the command line.
            match proxy.authorization().and_then(|a| a.to_str().ok()) {
                Some(auth) => {
                    let mut f = tempfile::Builder::new()
                        .prefix("tunnel-curl-proxy-")
                        .tempfile()
                        .map_err(|e| Error::Io(format!("cannot create a header file: {e}")))?;
                    writeln!(f, "Proxy-Authorization: {auth}")
                        .map_err(|e| Error::Io(format!("cannot write the header file: {e}")))?;
                    curl.arg("--proxy-header")
                        .arg(format!("@{}", f.path().display()));
                    Some(f)
                }
                None => None,
            }
        }
    };
    if let Some(ca) = &args.auth.edge.ca_file {
        curl.arg("--cacert").arg(ca);
    }
    let status = curl
        .args(&args.curl_args)
        .arg(&args.url)
        .status()
        .await
        .map_err(|e| Error::Io(format!("cannot run curl: {e}; install curl")))?;
    Ok(status
        .code()
        .map_or(crate::exit::INTERNAL, |c| c.clamp(0, 255) as u8))
}

/// An error as `{"error": {"code", "message"}}`, for `--json`.
pub fn json_error(e: &Error) -> serde_json::Value {
    let code = match e {
        Error::Auth(a) => a.code(),
        Error::Usage(_) | Error::Target(_) => "usage",
        Error::Interrupted => "cancelled",
        _ => "local_io",
    };
    json!({ "error": { "code": code, "message": e.to_string() } })
}
