//! `tunnel edge`: a self-hostable edge speaking the Access wire protocol. It checks
//! JWTs and service tokens against each app's policy, answers the login redirect,
//! publishes its JWKS, and bridges WebSocket streams to TCP origins.
//!
//! [`config`] parses `edge.toml`, [`issuer`] holds the signing key, [`policy`]
//! decides, [`server`] speaks HTTP; [`login`] is the CLI login page, [`handoff`]
//! holds sealed logins for pickup, [`exchange`] serves discovery metadata and the
//! org-token exchange; [`activity`] counts streams for the summary logged per
//! interval; [`limits`] bounds login attempts; [`resume`] holds resumable streams. [`Edge::load`] prepares everything
//! that can fail
//! before anything is bound; [`serve`] takes an already-bound listener (tests bind
//! port 0 and read back the address).

pub mod activity;
pub mod config;
pub mod exchange;
pub mod handoff;
pub mod issuer;
pub mod limits;
pub mod login;
pub mod policy;
pub mod resume;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{Config, ConfigError};
pub use issuer::Issuer;

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signing key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] issuer::KeyError),
    /// The TLS certificate or key could not be loaded.
    #[error(
        "tls_cert / tls_key: {0}; fix the path, or make a CA and certificate as the README's \"TLS for the edge\" shows"
    )]
    Tls(#[from] crate::tls::TlsError),
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; pick another `listen` address or stop the program using it"
    )]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `mint-token` named an app the config does not have.
    #[error("no app in the config matches {0:?}; use one of the [[apps]] hostnames")]
    UnknownApp(String),
}

/// A loaded edge: validated config, signing key and TLS acceptor.
pub struct Edge {
    /// The validated configuration.
    pub config: Config,
    /// The token issuer.
    pub issuer: Issuer,
    /// TLS acceptor when serving `wss://`.
    pub tls: Option<TlsAcceptor>,
    /// Sealed login hand-offs waiting for pickup.
    pub handoffs: handoff::Handoffs,
    /// Where streams and refusals are counted, once `--metrics` sets it.
    pub metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// Counters for the summary logged every `stats_interval`.
    pub activity: Arc<activity::Activity>,
    /// Login attempt limits.
    pub limits: limits::Limits,
    /// Password checks, off the async workers.
    pub passwords: login::PasswordChecks,
    /// The `[[users]]`, shared with the password-check threads.
    pub users: Arc<[config::User]>,
    /// Signed metadata by host, reused for a while.
    pub metadata: exchange::MetadataCache,
    /// Exchange codes already redeemed.
    pub redeemed: exchange::Redeemed,
    /// Resumable streams, by stream id.
    pub streams: Arc<resume::Streams>,
}

impl Edge {
    /// Load the signing key (creating it if missing) and TLS material for `config`.
    pub fn load(config: Config) -> Result<Edge, EdgeError> {
        check_key_dir(&config.signing_key)?;
        let issuer = Issuer::load_or_create(&config.signing_key, &config.auth_domain)?;
        let tls = match &config.tls {
            Some((cert, key)) => Some(TlsAcceptor::from(crate::tls::server_config(cert, key)?)),
            None => None,
        };
        Ok(Edge {
            limits: limits::Limits::new(&config.login_limits),
            passwords: login::PasswordChecks::new(config.login_limits.concurrent_hashes),
            users: config.users.clone().into(),
            config,
            issuer,
            tls,
            handoffs: handoff::Handoffs::default(),
            metrics: std::sync::OnceLock::new(),
            activity: Arc::default(),
            metadata: exchange::MetadataCache::default(),
            redeemed: exchange::Redeemed::default(),
            streams: Arc::default(),
        })
    }

    /// Everything [`Edge::load`] checks, without creating anything: the signing key
    /// loads (or its directory exists, so it can be made) and the TLS files load.
    /// Binding `listen` is left to the start, so a running edge's config can be
    /// checked.
    pub fn check(config: &Config) -> Result<(), EdgeError> {
        if config.signing_key.exists() {
            Issuer::load_or_create(&config.signing_key, &config.auth_domain)?;
        } else {
            check_key_dir(&config.signing_key)?;
        }
        if let Some((cert, key)) = &config.tls {
            crate::tls::server_config(cert, key)?;
        }
        Ok(())
    }

    /// Bind the configured listen address.
    pub async fn bind(&self) -> Result<TcpListener, EdgeError> {
        let addr = self.config.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| EdgeError::Bind { addr, source })
    }

    /// Mint a token for the app matching `app` (a hostname or URL) naming `email`.
    pub fn mint(&self, app: &str, email: &str, ttl: Duration) -> Result<String, EdgeError> {
        let host = app.split_once("://").map_or(app, |(_, r)| r);
        let host = host
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let found = self
            .config
            .apps
            .iter()
            .find(|a| a.hostname == host || policy::host_matches(&a.hostname, &host))
            .ok_or_else(|| EdgeError::UnknownApp(app.to_string()))?;
        Ok(self.issuer.mint(&found.aud, email, ttl))
    }
}

/// The signing key's directory must exist: the key is created there on first start.
fn check_key_dir(path: &std::path::Path) -> Result<(), EdgeError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if dir.is_dir() {
        return Ok(());
    }
    Err(EdgeError::Key(issuer::KeyError {
        path: path.to_path_buf(),
        what: format!(
            "its directory {} does not exist, so the key cannot be created there; create the directory or set signing_key to a path in an existing one",
            dir.display()
        ),
    }))
}

/// Serve on `listener` until `shutdown`; then stop accepting and drain live
/// streams for at most `grace`.
pub async fn serve(
    edge: Arc<Edge>,
    listener: TcpListener,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let scheme = crate::protocol::http_scheme(edge.tls.is_some());
    if let Ok(addr) = listener.local_addr() {
        info!(
            "listening on {addr} ({scheme}, {} apps)",
            edge.config.apps.len()
        );
    }
    let stop = shutdown.clone();
    let summary = {
        let (activity, every, stop) = (
            edge.activity.clone(),
            edge.config.stats_interval,
            shutdown.clone(),
        );
        tokio::spawn(async move { activity.log_every(every, stop).await })
    };
    let activity = edge.activity.clone();
    crate::serve::run(
        vec![listener],
        shutdown,
        None,
        grace,
        move |socket, peer, tracker| {
            server::connection(edge.clone(), socket, peer, tracker, stop.clone())
        },
    )
    .await;
    let _ = summary.await;
    activity.log_rest();
}
