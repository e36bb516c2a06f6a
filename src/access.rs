//! Validating the access flags (`tcp`, `ssh`, `up`'s tunnels, `doctor`) once into
//! the [`Target`] every connection uses, and building an app's login flow.

use std::sync::Arc;

use crate::auth::store::Store;
use crate::auth::{AuthConfig, Authenticator};
use crate::cli::{AccessArgs, Reach};
use crate::client::target::{self, AppUrl, Credentials, Target, TargetBuilder, TargetError};
use crate::console::Notice;
use crate::error::Error;
use crate::proxy::Proxies;
use crate::secret::Secret;

/// Validate the access flags into the [`Target`] every connection uses.
/// Login notes go to `notice`.
pub fn target_from(args: &AccessArgs, notice: Notice) -> Result<Target, Error> {
    Ok(builder_from(args, None, notice)?.build())
}

/// Validate the access flags into a [`TargetBuilder`] holding everything but the
/// observability taps (metrics, status), sharing `org_locks` (one login per auth
/// domain) with the other tunnels of this process; login notes go to `notice`.
pub fn builder_from(
    args: &AccessArgs,
    org_locks: Option<Arc<crate::auth::login::OrgLocks>>,
    notice: Notice,
) -> Result<TargetBuilder, Error> {
    let app = AppUrl::parse(&args.hostname)?;
    let connect_to = connect_to(&args.edge)?;
    let destination = match &args.destination {
        Some(d) => Some(target::parse_host_port("--destination", d)?),
        None => None,
    };
    let headers = args
        .header
        .iter()
        .map(|h| target::parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let credentials = credentials(args)?;
    // The same rules as the login's requests (auth_for): one resolver.
    let proxy = Proxies::for_reach(connect_to.as_deref())
        .route(app.is_tls(), app.host())
        .map_err(|e| Error::Usage(e.to_string()))?;
    let tls = crate::tls::client_config(args.edge.ca_file.as_deref())?;
    let credentials = match credentials {
        Credentials::None => Credentials::Login(Arc::new(auth_for(
            &app,
            tls.clone(),
            &args.edge,
            connect_to.clone(),
            true,
            org_locks,
            notice,
        )?)),
        given => given,
    };
    Ok(Target::builder(app, tls)
        .connect_to(connect_to)
        .destination(destination)
        .headers(headers)
        .credentials(credentials)
        .proxy(proxy))
}

/// `--connect-to`, checked (`host:port`).
pub fn connect_to(reach: &Reach) -> Result<Option<String>, Error> {
    match &reach.connect_to {
        Some(c) => Ok(Some(target::parse_host_port("--connect-to", c)?)),
        None => Ok(None),
    }
}

/// The credential flags: a service token, `--token`, or neither ([`Credentials::None`],
/// which the caller turns into a login).
fn credentials(args: &AccessArgs) -> Result<Credentials, Error> {
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
    Ok(match (id, secret, token) {
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
    })
}

/// The login flow for the app at `app`, whose HTTPS requests trust `tls`, with the
/// token cache and transfer URL of `reach` (`connect_to` already checked); used by the
/// token commands and by `tcp`/`ssh`. `org_locks` is shared with the other apps of
/// this process (`tunnel up`); its notes for the person (login prompts) go to
/// `notice`.
pub fn auth_for(
    app: &AppUrl,
    tls: Arc<rustls::ClientConfig>,
    reach: &Reach,
    connect_to: Option<String>,
    interactive: bool,
    org_locks: Option<Arc<crate::auth::login::OrgLocks>>,
    notice: Notice,
) -> Result<Authenticator, Error> {
    let proxies = Proxies::for_reach(connect_to.as_deref());
    // Checked at start, as the tunnel's route is: a proxy the client cannot use.
    proxies
        .route(app.is_tls(), app.host())
        .map_err(|e| Error::Usage(e.to_string()))?;
    let cfg = AuthConfig {
        host: app.host().to_string(),
        host_header: app.host_header(),
        scheme: app.http_scheme(),
        token_dir: reach.token_dir.clone().unwrap_or_else(Store::default_dir),
        transfer_url: reach.transfer_url.clone(),
        connect_to,
        proxies: Arc::new(proxies),
        tls,
        interactive,
        org_locks,
        notice,
    };
    Authenticator::new(cfg).map_err(Error::Auth)
}
