//! The login flow for one app, single-flight: however many connections (or
//! processes, through the lock file) need a token at once, one of them runs the
//! flow and the others wait for its result. The order is the README's ("Logging in"): app
//! discovery, then the cached app token, then the org-token exchange, then the
//! browser login with the encrypted hand-off.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::discovery::{self, AppInfo};
use super::exchange::Outcome;
use super::store::{Cached, Store};
use super::{AuthError, binding, exchange};
use crate::protocol;
use crate::secret::Secret;

mod handoff;

/// Cloudflare's hand-off service, used when neither `--transfer-url` nor the app's
/// metadata names one.
pub const CLOUDFLARE_TRANSFER: &str = "https://login.cloudflareaccess.org";
/// Most hand-off polls (as cloudflared: at most 10 of up to 60 s).
pub const MAX_POLLS: usize = 10;
/// Limit for one hand-off poll.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest login hand-off read (two sealed JWTs: a few KiB).
pub const MAX_HANDOFF: usize = 64 * 1024;
/// Limit for every other request of the flow.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything the flow needs to know, fixed at start.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The app's host (no port).
    pub host: String,
    /// `host[:port]` as used in URLs.
    pub host_header: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The token cache directory.
    pub token_dir: PathBuf,
    /// `--transfer-url`, overriding the metadata's and Cloudflare's.
    pub transfer_url: Option<String>,
    /// `--connect-to` (`host:port`): every request of the flow goes there, keeping
    /// Host and SNI.
    pub connect_to: Option<String>,
    /// Which requests go through which proxy: the resolver the tunnel uses too.
    pub proxies: Arc<crate::proxy::Proxies>,
    /// TLS configuration for every HTTPS request (roots + `--ca-file`).
    pub tls: Arc<rustls::ClientConfig>,
    /// Whether a browser login may be started (false for `tunnel token`).
    pub interactive: bool,
    /// Shared by every app of one process (`tunnel up`): one login at a time per
    /// auth domain, so the second app of an organisation waits for the first app's
    /// browser login and then exchanges its org token instead of opening a browser.
    pub org_locks: Option<Arc<OrgLocks>>,
    /// Where notes for the person go (the login URL, waiting): stderr in the binary.
    pub notice: crate::console::Notice,
}

/// One async lock per auth domain, for [`AuthConfig::org_locks`].
#[derive(Debug, Default)]
pub struct OrgLocks {
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl OrgLocks {
    /// Wait for the login lock of `auth_domain`.
    pub async fn lock(&self, auth_domain: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(auth_domain.to_ascii_lowercase())
                .or_default()
                .clone()
        };
        lock.lock_owned().await
    }
}

impl AuthConfig {
    /// `scheme://host[:port]/`.
    pub fn app_url(&self) -> String {
        format!("{}://{}/", self.scheme, self.host_header)
    }

    /// Whether the org token may travel over plain HTTP: only to a development edge
    /// on this machine (an `http://` app reached at a loopback address).
    pub fn plain_ok(&self) -> bool {
        let loopback = |h: &str| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        self.scheme == "http"
            && match &self.connect_to {
                Some(to) => binding::split_domain(to).is_some_and(|(h, _)| loopback(h)),
                None => loopback(&self.host),
            }
    }
}

/// How a token was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From memory or the cache directory.
    Cache,
    /// Exchanged for the org token, without a browser.
    Exchange,
    /// A browser login.
    Browser,
}

/// A token for the app, with what the caller may want to report.
#[derive(Debug, Clone)]
pub struct Obtained {
    /// The app token.
    pub token: Secret,
    /// The file it is cached in.
    pub path: PathBuf,
    /// The app as discovered.
    pub info: AppInfo,
    /// How it was obtained.
    pub source: Source,
}

#[derive(Default)]
struct State {
    info: Option<AppInfo>,
    http: Option<reqwest::Client>,
    current: Option<Obtained>,
}

/// Gets and refreshes tokens for one app. Cheap to share (`Arc`).
pub struct Authenticator {
    cfg: AuthConfig,
    store: Store,
    state: tokio::sync::Mutex<State>,
}

impl Authenticator {
    /// Open the token cache; nothing touches the network yet.
    pub fn new(cfg: AuthConfig) -> Result<Authenticator, AuthError> {
        let store = Store::open(&cfg.token_dir)?;
        Ok(Authenticator {
            cfg,
            store,
            state: tokio::sync::Mutex::new(State::default()),
        })
    }

    /// The token in memory, if one was obtained and no refresh is running.
    pub fn current(&self) -> Option<Secret> {
        let state = self.state.try_lock().ok()?;
        state
            .current
            .as_ref()
            .filter(|o| fresh(&o.token))
            .map(|o| o.token.clone())
    }

    /// A valid token: from memory, the cache, the org-token exchange or (when
    /// interactive) a browser login. `stale` is a token the edge just refused: it is
    /// deleted, unless another caller already replaced it.
    pub async fn token(&self, stale: Option<&Secret>) -> Result<Obtained, AuthError> {
        let mut state = self.state.lock().await;
        if let Some(cur) = &state.current
            && stale != Some(&cur.token)
            && fresh(&cur.token)
        {
            return Ok(cur.clone());
        }
        let obtained = self.obtain(&mut state, stale).await?;
        state.current = Some(obtained.clone());
        Ok(obtained)
    }

    /// Only what is cached: never exchanges, never logs in. The cache is searched by
    /// the app's host first, with no network at all; only when no file there names
    /// this host (an app with a path, say) does discovery find the file.
    pub async fn cached(&self) -> Result<Option<Cached>, AuthError> {
        if let Some(c) = self.offline().into_iter().next() {
            return Ok(Some(c));
        }
        let mut state = self.state.lock().await;
        match self.discover(&mut state).await {
            Ok((info, _)) => self.cached_fit(&self.app_path(&info), &info),
            // Offline and nothing cached under this host's name: there is no token.
            Err(AuthError::Network(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Discover the app (metadata verified against its auth domain's keys) and read
    /// the edge's clock from the same answer's `Date` header (Unix seconds), for
    /// `tunnel doctor`.
    pub async fn probe(&self) -> Result<(AppInfo, Option<u64>), AuthError> {
        let date = self
            .client(&[self.cfg.host.as_str()], REQUEST_TIMEOUT)?
            .head(self.cfg.app_url())
            .send()
            .await
            .ok()
            .and_then(|r| {
                let v = r.headers().get(reqwest::header::DATE)?.to_str().ok()?;
                let t = httpdate::parse_http_date(v).ok()?;
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            });
        let mut state = self.state.lock().await;
        let (info, _) = self.discover(&mut state).await?;
        Ok((info, date))
    }

    /// The token cache.
    pub fn cache(&self) -> &Store {
        &self.store
    }

    /// Delete this app's cached tokens (found by host, without the network, else by
    /// discovery); returns the files removed.
    pub async fn logout(&self) -> Result<Vec<PathBuf>, AuthError> {
        let mut state = self.state.lock().await;
        state.current = None;
        let mut paths: Vec<PathBuf> = self.offline().into_iter().map(|c| c.path).collect();
        if paths.is_empty() {
            match self.discover(&mut state).await {
                Ok((info, _)) => paths.push(self.app_path(&info)),
                Err(AuthError::Network(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut removed = Vec::new();
        for path in paths {
            if path.exists() {
                self.store.remove(&path)?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// Valid cached app tokens whose file names this host, newest expiry first.
    fn offline(&self) -> Vec<Cached> {
        let files = self.store.all_token_files().unwrap_or_default();
        let mut found: Vec<Cached> = files
            .iter()
            .filter(|p| !p.to_string_lossy().ends_with("-org-token"))
            .filter_map(|p| self.store.read(p, None).ok().flatten())
            .filter(|c| {
                let name = c.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let auds = match &c.claims.aud {
                    super::jwt::Audience::One(a) => vec![a.clone()],
                    super::jwt::Audience::Many(v) => v.clone(),
                };
                binding::cache_name_covers(name, &auds, &self.cfg.host)
            })
            .collect();
        found.sort_by_key(|c| std::cmp::Reverse(c.claims.exp));
        found
    }

    fn app_path(&self, info: &AppInfo) -> PathBuf {
        self.store
            .app_token_path(&info.meta.app_hostname, &info.meta.aud)
    }

    async fn discover(&self, state: &mut State) -> Result<(AppInfo, reqwest::Client), AuthError> {
        if let (Some(info), Some(http)) = (&state.info, &state.http) {
            return Ok((info.clone(), http.clone()));
        }
        let first = self.client(&[self.cfg.host.as_str()], REQUEST_TIMEOUT)?;
        let (jwt, unverified) = discovery::fetch(&first, &self.cfg.app_url()).await?;
        let auth_host = binding::split_domain(&unverified.auth_domain)
            .map_or(unverified.auth_domain.as_str(), |(h, _)| h)
            .to_string();
        let http = self.client(
            &[self.cfg.host.as_str(), auth_host.as_str()],
            REQUEST_TIMEOUT,
        )?;
        let info = discovery::verify_with_jwks(
            &http,
            &jwt,
            &unverified.auth_domain,
            &self.cfg.host,
            self.cfg.scheme,
        )
        .await?;
        state.info = Some(info.clone());
        state.http = Some(http.clone());
        Ok((info, http))
    }

    async fn obtain(
        &self,
        state: &mut State,
        stale: Option<&Secret>,
    ) -> Result<Obtained, AuthError> {
        let (info, http) = self.discover(state).await?;
        let app_path = self.app_path(&info);
        let done = |token: Secret, source| Obtained {
            token,
            path: app_path.clone(),
            info: info.clone(),
            source,
        };
        if let Some(stale) = stale {
            self.forget_refused(&app_path, stale)?;
        }
        if let Some(c) = self.cached_fit(&app_path, &info)?
            && stale != Some(&c.token)
        {
            return Ok(done(c.token, Source::Cache));
        }
        let auth_domain = info.meta.auth_domain.as_str();
        // One login per organisation at a time: a second app waits here, then finds
        // the org token the first one's login left and exchanges it.
        let _org_turn = match &self.cfg.org_locks {
            Some(locks) => Some(locks.lock(auth_domain).await),
            None => None,
        };
        if let Some(token) = self.exchange_org(&http, &info, &app_path).await? {
            return Ok(done(token, Source::Exchange));
        }
        if !self.cfg.interactive {
            return Err(AuthError::LoginNeeded {
                app: self.cfg.app_url(),
            });
        }
        let (token, source) = self.log_in_or_wait(&info, &app_path).await?;
        Ok(done(token, source))
    }

    /// Delete the cached token at `app_path` if it is `stale`, the token we offered
    /// and this edge refused; nothing else because of one edge's answer.
    fn forget_refused(&self, app_path: &Path, stale: &Secret) -> Result<(), AuthError> {
        // Only a token we offered (so one this edge's auth domain issued) and the
        // edge refused is deleted; nothing else because of one edge's answer.
        let on_disk = self.store.read(app_path, None)?;
        if on_disk.as_ref().is_some_and(|c| &c.token == stale) {
            info!(
                "the edge refused the cached token for {}; removing it",
                self.cfg.host
            );
            self.store.remove(app_path)?;
        }
        Ok(())
    }

    /// Exchange the organisation's cached login for a token of this app, when there
    /// is one; it is cached at `app_path`.
    async fn exchange_org(
        &self,
        http: &reqwest::Client,
        info: &AppInfo,
        app_path: &Path,
    ) -> Result<Option<Secret>, AuthError> {
        let auth_domain = info.meta.auth_domain.as_str();
        let org_path = self.store.org_token_path(auth_domain);
        let org = self
            .store
            .read(&org_path, None)?
            .filter(|c| binding::org_token_fits(&c.claims, auth_domain));
        if let Some(org) = org {
            let app_url = self.cfg.app_url();
            let scope = exchange::Scope {
                app_url: &app_url,
                auth_domain,
                plain_ok: self.cfg.plain_ok(),
            };
            match exchange::exchange(http, scope, org.token.expose()).await? {
                Outcome::Token(token) if self.fits(&token, info) => {
                    self.store.write(app_path, &token)?;
                    info!("exchanged the org token for a new {} token", self.cfg.host);
                    return Ok(Some(Secret::new(token)));
                }
                Outcome::Token(_) => {
                    info!(
                        "the org-token exchange returned a token {auth_domain} did not issue for this app; ignored"
                    );
                }
                Outcome::OrgTokenRefused => {
                    info!(
                        "{auth_domain} refused the organisation login; a browser login is needed"
                    );
                    self.store.remove(&org_path)?;
                }
                Outcome::Forbidden => {
                    let who = org.claims.email.as_deref().unwrap_or("this login");
                    return Err(AuthError::Forbidden(format!(
                        "{auth_domain} does not allow {who} into {}; ask the app's owner for access, or `tunnel logout --all` and log in as someone else",
                        self.cfg.host
                    )));
                }
                Outcome::NoToken => {
                    info!(
                        "the org-token exchange for {} ended without a token; a browser login is needed",
                        self.cfg.host
                    );
                }
            }
        }
        Ok(None)
    }

    /// The cached token at `path` when it may be offered to this app's edge
    /// ([`binding::app_token_fits`]). A token of another issuer is left in place.
    fn cached_fit(&self, path: &Path, info: &AppInfo) -> Result<Option<Cached>, AuthError> {
        Ok(self
            .store
            .read(path, Some(&info.meta.aud))?
            .filter(|c| binding::app_token_fits(&c.claims, &info.meta)))
    }

    /// Whether `token` was issued by this app's auth domain for this app.
    fn fits(&self, token: &str, info: &AppInfo) -> bool {
        super::jwt::claims(token).is_ok_and(|c| binding::app_token_fits(&c, &info.meta))
    }

    /// An HTTP client for the flow: no redirects followed, our TLS roots, the
    /// tunnel's proxy routes, and with `--connect-to` every name in `hosts`
    /// resolving to that address.
    fn client(&self, hosts: &[&str], timeout: Duration) -> Result<reqwest::Client, AuthError> {
        for h in hosts.iter().filter(|h| !h.is_empty()) {
            self.cfg
                .proxies
                .route(self.cfg.scheme == "https", h)
                .map_err(|e| AuthError::Network(e.to_string()))?;
        }
        let mut b = reqwest::Client::builder()
            // Our resolver instead of reqwest's reading of the environment.
            .no_proxy()
            .proxy(self.cfg.proxies.reqwest())
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls((*self.cfg.tls).clone())
            .user_agent(protocol::USER_AGENT)
            .connect_timeout(REQUEST_TIMEOUT)
            .timeout(timeout);
        if let Some(to) = &self.cfg.connect_to {
            let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(to.as_str())
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| AuthError::Network(format!("cannot resolve --connect-to {to}")))?;
            for h in hosts.iter().filter(|h| !h.is_empty()) {
                b = b.resolve(h, addr);
            }
        }
        b.build()
            .map_err(|e| super::network("cannot build the HTTP client", &e))
    }
}

fn fresh(token: &Secret) -> bool {
    super::jwt::claims(token.expose()).is_ok_and(|c| c.exp > super::jwt::now_secs() + 5)
}
