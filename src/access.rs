//! Validating the access flags (`tcp`, `ssh`, `up`'s tunnels, `doctor`) once into
//! the [`Target`] every connection uses, and building an app's login flow.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::auth::store::Store;
use crate::auth::{AuthConfig, Authenticator};
use crate::cli::AccessArgs;
use crate::client::{Credentials, Target, TargetError, target};
use crate::error::Error;
use crate::secret::Secret;

/// Validate the access flags into the [`Target`] every connection uses.
pub fn target_from(args: &AccessArgs) -> Result<Target, Error> {
    target_with_locks(args, None)
}

/// [`target_from`], sharing `org_locks` (one login per auth domain) with the other
/// tunnels of this process.
pub fn target_with_locks(
    args: &AccessArgs,
    org_locks: Option<Arc<crate::auth::login::OrgLocks>>,
) -> Result<Target, Error> {
    let mut t = Target::parse(&args.hostname)?;
    if let Some(c) = &args.edge.connect_to {
        t.connect_to = Some(target::parse_host_port("--connect-to", c)?);
    }
    if let Some(d) = &args.destination {
        t.destination = Some(target::parse_host_port("--destination", d)?);
    }
    for h in &args.header {
        t.headers.push(target::parse_header(h)?);
    }
    let one_line = |flag: &'static str, value: Option<&str>| match value {
        Some(v) if v.chars().any(|c| c.is_control()) => Err(TargetError::Credential(flag)),
        _ => Ok(()),
    };
    one_line(
        "--service-token-id",
        args.service.service_token_id.as_deref(),
    )?;
    one_line(
        "--service-token-secret",
        args.service.service_token_secret.as_deref(),
    )?;
    one_line("--token", args.token.as_deref())?;
    let id = args
        .service
        .service_token_id
        .as_deref()
        .filter(|s| !s.is_empty());
    let secret = args
        .service
        .service_token_secret
        .as_deref()
        .filter(|s| !s.is_empty());
    let token = args.token.as_deref().filter(|s| !s.is_empty());
    t.credentials = match (id, secret, token) {
        (Some(_), Some(_), Some(_)) => {
            return Err(Error::Usage(
                "give either --token or a service token (--service-token-id/--service-token-secret), not both".into(),
            ));
        }
        (Some(id), Some(secret), None) => Credentials::ServiceToken {
            id: id.to_string(),
            secret: Secret::new(secret),
        },
        (Some(_), None, _) => {
            return Err(Error::Usage(
                "--service-token-id needs --service-token-secret too".into(),
            ));
        }
        (None, Some(_), _) => {
            return Err(Error::Usage(
                "--service-token-secret needs --service-token-id too".into(),
            ));
        }
        (None, None, Some(tok)) => Credentials::Token(Secret::new(tok)),
        (None, None, None) => Credentials::None,
    };
    if t.connect_to.is_none() {
        t.proxy = crate::client::proxy::from_env(t.tls, &t.host, |k| std::env::var(k).ok());
    }
    if t.tls || args.edge.ca_file.is_some() {
        t.tls_config = Some(crate::tls::client_config(args.edge.ca_file.as_deref())?);
    }
    if matches!(t.credentials, Credentials::None) {
        let auth = auth_for(
            &t,
            args.edge.token_dir.as_deref(),
            args.edge.transfer_url.clone(),
            t.connect_to.clone(),
            args.edge.ca_file.as_deref(),
            true,
            org_locks,
        )?;
        t.auth = Some(Arc::new(auth));
    }
    Ok(t)
}

/// The login flow for `target`, used by the token commands and by `tcp`/`ssh`;
/// `org_locks` is shared with the other apps of this process (`tunnel up`).
pub fn auth_for(
    target: &Target,
    token_dir: Option<&Path>,
    transfer_url: Option<String>,
    connect_to: Option<String>,
    ca_file: Option<&Path>,
    interactive: bool,
    org_locks: Option<Arc<crate::auth::login::OrgLocks>>,
) -> Result<Authenticator, Error> {
    let tls = match &target.tls_config {
        Some(c) => c.clone(),
        None => crate::tls::client_config(ca_file)?,
    };
    let cfg = AuthConfig {
        host: target.host.clone(),
        host_header: target.host_header(),
        scheme: if target.tls { "https" } else { "http" },
        token_dir: token_dir
            .map(PathBuf::from)
            .unwrap_or_else(Store::default_dir),
        transfer_url,
        connect_to,
        tls,
        interactive,
        org_locks,
    };
    Authenticator::new(cfg).map_err(Error::Auth)
}
