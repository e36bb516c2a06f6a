//! `tunnel up`: every tunnel of one TOML file in one process. Authentication stays
//! lazy, and single-flight per auth domain ([`OrgLocks`]): the first connection to
//! any app of an organisation logs in once; the other apps get their tokens by the
//! org-token exchange. The file is reloaded on SIGHUP and when it changes: added
//! tunnels start, removed ones stop accepting and drain, changed ones are rebuilt;
//! unchanged ones, and their live connections, are not touched. A file that does not
//! parse or validate is reported and the running set stays as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::auth::login::OrgLocks;
use crate::cli::{AccessArgs, Reach};
use crate::client::listen;
use crate::client::target::TargetBuilder;
use crate::console::Notice;
use crate::error::Error;
use crate::metrics::{Metrics, TunnelMetrics};

/// How long a burst of change events may take before the file is read again.
pub const SETTLE: Duration = Duration::from_millis(200);

/// The default config file: `<config dir>/tunnel/up.toml`.
pub fn default_path() -> PathBuf {
    dirs::config_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("tunnel")
        .join("up.toml")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    token_dir: Option<PathBuf>,
    connect_to: Option<String>,
    ca_file: Option<PathBuf>,
    transfer_url: Option<String>,
    keepalive_interval: Option<String>,
    keepalive_timeout: Option<String>,
    grace_period: Option<String>,
    #[serde(default)]
    tunnels: Vec<TunnelFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelFile {
    name: Option<String>,
    hostname: String,
    listen: OneOrMany,
    destination: Option<String>,
    #[serde(default)]
    headers: Vec<String>,
    connect_to: Option<String>,
    ca_file: Option<PathBuf>,
    service_token_id_env: Option<String>,
    service_token_secret_env: Option<String>,
    service_token_file: Option<PathBuf>,
    keepalive_interval: Option<String>,
    keepalive_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// One validated tunnel. Two specs are equal when nothing about the tunnel changed
/// (credentials included), which is what reload compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// Its name (unique in the file; the hostname when not given).
    pub name: String,
    /// The app.
    pub hostname: String,
    /// Local addresses.
    pub listen: Vec<String>,
    /// Bastion destination.
    pub destination: Option<String>,
    /// Extra request headers.
    pub headers: Vec<String>,
    /// `--connect-to`.
    pub connect_to: Option<String>,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--token-dir`.
    pub token_dir: Option<PathBuf>,
    /// `--transfer-url`.
    pub transfer_url: Option<String>,
    /// Service token: where it came from (for the plan) and the id and secret.
    pub service_token: Option<(String, String, crate::secret::Secret)>,
    /// Ping the edge after this long without hearing from it.
    pub keepalive_interval: Duration,
    /// Presume the edge dead this long after a ping was due.
    pub keepalive_timeout: Duration,
    /// How long live connections may finish when the tunnel stops.
    pub grace_period: Duration,
}

impl Tunnel {
    fn args(&self) -> AccessArgs {
        AccessArgs {
            hostname: self.hostname.clone(),
            url: self.listen.clone(),
            destination: self.destination.clone(),
            service: crate::cli::ServiceToken {
                service_token_id: self.service_token.as_ref().map(|(_, id, _)| id.clone()),
                service_token_secret: self
                    .service_token
                    .as_ref()
                    .map(|(_, _, s)| s.expose().to_string()),
            },
            token: None,
            header: self.headers.clone(),
            edge: Reach {
                connect_to: self.connect_to.clone(),
                ca_file: self.ca_file.clone(),
                token_dir: self.token_dir.clone(),
                transfer_url: self.transfer_url.clone(),
            },
            login_now: false,
            metrics: None,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            grace_period: self.grace_period,
        }
    }

    /// One line of the plan: `name: listen -> app (how it authenticates)`.
    pub fn plan_line(&self) -> String {
        let auth = match &self.service_token {
            Some((from, id, _)) => format!("service token {id} from {from}"),
            None => "login (lazy, one per auth domain)".into(),
        };
        let via = self
            .connect_to
            .as_deref()
            .map(|c| format!(" via {c}"))
            .unwrap_or_default();
        let dest = self
            .destination
            .as_deref()
            .map(|d| format!(" to {d}"))
            .unwrap_or_default();
        format!(
            "{}: {} -> {}{dest}{via} ({auth})",
            self.name,
            self.listen.join(", "),
            self.hostname
        )
    }
}

/// Read and validate the file at `path`: every tunnel's flags are checked as `tcp`
/// would check them (which builds its [`Target`], once, sharing `locks` when given),
/// names and listen addresses are unique, and named environment variables and token
/// files exist. Errors name the file (and line, for syntax).
pub fn load(
    path: &Path,
    locks: Option<&Arc<OrgLocks>>,
    notice: &Notice,
) -> Result<Vec<(Tunnel, TargetBuilder)>, Error> {
    let bad = |what: String| Error::Config(format!("{}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad(format!(
            "cannot read: {e}; write one (see the README's \"Daily use\") or pass --config"
        ))
    })?;
    let file: File = toml::from_str(&text).map_err(|e| bad(one_line(&e.to_string())))?;
    let file = env_defaults(file);
    let dir = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &Option<PathBuf>| p.as_ref().map(|p| dir.join(p));
    let mut tunnels = Vec::new();
    for (i, t) in file.tunnels.into_iter().enumerate() {
        let name = t.name.clone().unwrap_or_else(|| t.hostname.clone());
        let label = format!("tunnel {name:?} (#{})", i + 1);
        let at = |what: String| bad(format!("{label}: {what}"));
        let listen = match &t.listen {
            OneOrMany::One(a) => vec![a.clone()],
            OneOrMany::Many(v) => v.clone(),
        };
        if listen.is_empty() {
            return Err(at("`listen` is empty; give one or more host:port".into()));
        }
        for a in &listen {
            listen::parse_url("`listen`", a).map_err(|e| at(e.to_string()))?;
        }
        let service_token = service_token(&t, dir).map_err(at)?;
        let keepalive_interval = duration(
            "keepalive_interval",
            t.keepalive_interval
                .as_ref()
                .or(file.keepalive_interval.as_ref()),
            DEFAULT_KEEPALIVE_INTERVAL,
            false,
        )
        .map_err(at)?;
        let keepalive_timeout = duration(
            "keepalive_timeout",
            t.keepalive_timeout
                .as_ref()
                .or(file.keepalive_timeout.as_ref()),
            DEFAULT_KEEPALIVE_TIMEOUT,
            false,
        )
        .map_err(at)?;
        let grace_period = duration(
            "grace_period",
            file.grace_period.as_ref(),
            crate::shutdown::GRACE,
            true,
        )
        .map_err(bad)?;
        let tunnel = Tunnel {
            name,
            hostname: t.hostname,
            listen,
            destination: t.destination,
            headers: t.headers,
            connect_to: t.connect_to.or_else(|| file.connect_to.clone()),
            ca_file: rel(&t.ca_file).or_else(|| rel(&file.ca_file)),
            token_dir: rel(&file.token_dir),
            transfer_url: file.transfer_url.clone(),
            service_token,
            keepalive_interval,
            keepalive_timeout,
            grace_period,
        };
        let target = crate::access::builder_from(&tunnel.args(), locks.cloned(), notice.clone())
            .map_err(|e| at(e.to_string()))?;
        tunnels.push((tunnel, target));
    }
    if tunnels.is_empty() {
        return Err(bad("no [[tunnels]]; add at least one".into()));
    }
    unique(tunnels.iter().map(|(t, _)| t)).map_err(bad)?;
    Ok(tunnels)
}

/// What the file leaves out, the environment may give, as for `tcp`.
fn env_defaults(mut file: File) -> File {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let env_path = |k: &str| {
        let cwd = std::env::current_dir().unwrap_or_default();
        env(k).map(|v| cwd.join(v))
    };
    file.token_dir = file.token_dir.or_else(|| env_path("TUNNEL_TOKEN_DIR"));
    file.ca_file = file.ca_file.or_else(|| env_path("TUNNEL_CA_FILE"));
    let env_text = |k: &str| env(k).map(|v| v.to_string_lossy().into_owned());
    file.connect_to = file.connect_to.or_else(|| env_text("TUNNEL_CONNECT_TO"));
    file.transfer_url = file
        .transfer_url
        .or_else(|| env_text("TUNNEL_TRANSFER_URL"));
    file
}

/// Names and listen addresses are unique across `tunnels` (port 0 may repeat).
fn unique<'a>(tunnels: impl Iterator<Item = &'a Tunnel> + Clone) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for t in tunnels.clone() {
        if seen.insert(t.name.as_str(), ()).is_some() {
            return Err(format!(
                "two tunnels are named {:?}; give each a unique `name`",
                t.name
            ));
        }
    }
    let mut addrs = BTreeMap::new();
    for t in tunnels.clone() {
        // Port 0 ("any free port") may repeat. Compared as parsed (`load` checked
        // them), so ` 127.0.0.1:22` and `tcp://127.0.0.1:22` are one address.
        let parsed = t.listen.iter().filter_map(|a| {
            let hp = listen::parse_url("`listen`", a).ok()?;
            (hp.port() != Some(0)).then(|| (a, hp.to_string().to_ascii_lowercase()))
        });
        for (a, key) in parsed {
            if let Some(other) = addrs.insert(key, t.name.as_str()) {
                return Err(format!(
                    "listen address {a} is used by tunnels {other:?} and {:?}",
                    t.name
                ));
            }
        }
    }
    Ok(())
}

/// The keepalive `tcp` uses unless told otherwise (below every known middlebox idle
/// cutoff; Cloudflare's is about 270 s).
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(54);
/// How long after a due ping the edge is presumed dead, unless told otherwise.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A duration key (`"54s"`, `"500ms"`), `default` when absent.
fn duration(
    key: &str,
    v: Option<&String>,
    default: Duration,
    zero_ok: bool,
) -> Result<Duration, String> {
    let Some(v) = v else { return Ok(default) };
    match humantime::parse_duration(v) {
        Ok(d) if d.is_zero() && !zero_ok => Err(format!("{key} = {v:?} must be more than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{key} = {v:?}: {e}; use e.g. 54s, 500ms, 2m")),
    }
}

type ServiceToken = Option<(String, String, crate::secret::Secret)>;

fn service_token(t: &TunnelFile, dir: &Path) -> Result<ServiceToken, String> {
    let env = |name: &str| {
        std::env::var(name).map_err(|_| {
            format!("environment variable {name} is not set (named by service_token_*_env)")
        })
    };
    match (
        &t.service_token_id_env,
        &t.service_token_secret_env,
        &t.service_token_file,
    ) {
        (None, None, None) => Ok(None),
        (Some(i), Some(s), None) => Ok(Some((
            format!("${i}/${s}"),
            env(i)?,
            crate::secret::Secret::new(env(s)?),
        ))),
        (None, None, Some(f)) => {
            let path = dir.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read service_token_file {}: {e}", path.display()))?;
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            match (lines.next(), lines.next(), lines.next()) {
                (Some(id), Some(secret), None) => Ok(Some((
                    path.display().to_string(),
                    id.to_string(),
                    crate::secret::Secret::new(secret),
                ))),
                _ => Err(format!(
                    "service_token_file {} must hold two lines: the client id, then the secret",
                    path.display()
                )),
            }
        }
        _ => Err(
            "give service_token_id_env and service_token_secret_env together, or service_token_file alone"
                .into(),
        ),
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && *l != "^")
        .collect::<Vec<_>>()
        .join("; ")
}

/// A tunnel being served: its spec, the token that stops it, and its task.
struct Running {
    tunnel: Tunnel,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Serve every tunnel of `path` until `shutdown`, reloading when `reload` receives
/// (the caller sends on SIGHUP) and when the file changes (a watcher on its
/// directory, so editors that replace the file are seen too).
pub async fn run(
    path: &Path,
    shutdown: CancellationToken,
    reload: (mpsc::Sender<()>, mpsc::Receiver<()>),
    metrics: Option<Arc<Metrics>>,
    notice: Notice,
) -> Result<(), Error> {
    let (tx, mut rx) = reload;
    let shared = Shared {
        locks: Arc::new(OrgLocks::default()),
        notice,
        metrics,
        registry: crate::status::Registry::new(),
    };
    tokio::spawn(crate::status::serve(
        shared.registry.clone(),
        shutdown.clone(),
    ));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    crate::serve::raise_fd_limit();
    let tunnels = load(path, Some(&shared.locks), &shared.notice)?;
    let grace = tunnels
        .first()
        .map_or(crate::shutdown::GRACE, |(t, _)| t.grace_period);
    let shutdown = crate::shutdown::announce(&shutdown, grace);
    for (t, target) in tunnels {
        let r = start(t, target, &shared, &shutdown).await?;
        running.insert(r.tunnel.name.clone(), r);
    }
    info!("{} tunnels up from {}", running.len(), path.display());
    let _watcher = match watch(path, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            let shown = path.display();
            tracing::warn!("not watching {shown} for changes ({e}); reload it with SIGHUP");
            None
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = rx.recv() => {}
        }
        // An editor's save is several events: let them settle, then reload once.
        tokio::time::sleep(SETTLE).await;
        while rx.try_recv().is_ok() {}
        apply(path, &mut running, &shared, &shutdown).await;
    }
    for r in running.into_values() {
        let _ = r.task.await;
    }
    Ok(())
}

/// Watch the directory of `path` and send on `tx` when `path` itself changes.
fn watch(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let name = path.file_name().map(|n| n.to_os_string());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let ours = event.is_ok_and(|e| {
            !e.kind.is_access() && e.paths.iter().any(|p| p.file_name() == name.as_deref())
        });
        if ours {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Reload: compare the new file with what runs, and change only what differs.
async fn apply(
    path: &Path,
    running: &mut BTreeMap<String, Running>,
    shared: &Shared,
    shutdown: &CancellationToken,
) {
    let new = match load(path, Some(&shared.locks), &shared.notice) {
        Ok(t) => t,
        Err(e) => {
            return error!("not reloaded, the running tunnels stay as they were: {e}");
        }
    };
    let wanted: BTreeMap<String, (Tunnel, TargetBuilder)> =
        new.into_iter().map(|t| (t.0.name.clone(), t)).collect();
    let gone: Vec<String> = running
        .iter()
        .filter(|(name, r)| wanted.get(*name).map(|w| &w.0) != Some(&r.tunnel))
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        if let Some(r) = running.remove(&name) {
            info!("tunnel {name}: stopping (live connections drain)");
            shared.registry.remove_tunnel(&name);
            r.stop.cancel();
            // Its listeners close when its accept loops return; the drain goes on
            // in the background.
            tokio::spawn(r.task);
        }
    }
    let (mut started, mut failed) = (0, 0);
    for (name, (t, target)) in wanted {
        if running.contains_key(&name) {
            continue;
        }
        match start(t, target, shared, shutdown).await {
            Ok(r) => {
                started += 1;
                running.insert(name, r);
            }
            Err(e) => {
                failed += 1;
                error!("tunnel {name} not started: {e}");
            }
        }
    }
    info!(
        "reloaded {}: {} tunnels running ({started} started, {failed} failed)",
        path.display(),
        running.len()
    );
}

/// What every tunnel of one `up` shares.
struct Shared {
    locks: Arc<OrgLocks>,
    /// Where the login flows' notes go.
    notice: Notice,
    metrics: Option<Arc<Metrics>>,
    registry: Arc<crate::status::Registry>,
}

async fn start(
    tunnel: Tunnel,
    target: TargetBuilder,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<Running, Error> {
    let target = target
        .metrics(shared.metrics.clone().map(|metrics| TunnelMetrics {
            metrics,
            name: tunnel.name.clone(),
        }))
        .status(crate::status::Tap {
            registry: shared.registry.clone(),
            name: tunnel.name.clone(),
        })
        .build();
    let target = Arc::new(target);
    // A changed tunnel's old listener may still be closing: retry a busy address
    // for a moment before giving up.
    let mut tries = 0;
    let listeners = loop {
        match listen::bind(&tunnel.listen).await {
            Ok(l) => break l,
            Err(listen::ListenError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && tries < 20 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let addrs = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    shared.registry.add_tunnel(
        &tunnel.name,
        &target.url(),
        addrs,
        target.credentials().login().cloned(),
        target.credentials().kind(),
    );
    let stop = shutdown.child_token();
    let keepalive = crate::bridge::Keepalive {
        interval: tunnel.keepalive_interval,
        timeout: tunnel.keepalive_timeout,
    };
    let grace = tunnel.grace_period;
    let task = tokio::spawn(listen::serve(
        listeners,
        target,
        stop.clone(),
        grace,
        keepalive,
        Some(&tunnel.name),
    ));
    info!("tunnel {}", tunnel.plan_line());
    Ok(Running { tunnel, stop, task })
}

/// One `[[tunnels]]` entry as `--from-cloudflared` writes it.
#[derive(Debug, serde::Serialize)]
struct Imported {
    name: String,
    hostname: String,
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_token_id_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_token_secret_env: Option<String>,
}

/// `TUNNEL_<HOST>_<suffix>`, the host upper-cased with every other character `_`.
fn env_var_name(host: &str, suffix: &str) -> String {
    let stem: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("TUNNEL_{stem}_{suffix}")
}

/// What `tunnel up --from-cloudflared FILE` prints: the `forwarders:` of a
/// `cloudflared` `config.yml` as our TOML, and, for the person, which environment
/// variables must hold the service tokens (secrets are never copied into the file).
pub fn from_cloudflared(path: &Path) -> Result<(String, Vec<String>), Error> {
    let bad = |what: String| Error::Config(format!("{}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let docs =
        yaml_rust2::YamlLoader::load_from_str(&text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let empty = Vec::new();
    let forwarders = docs
        .first()
        .and_then(|d| d["forwarders"].as_vec())
        .unwrap_or(&empty);
    if forwarders.is_empty() {
        return Err(bad("no `forwarders:` list to import".into()));
    }
    let mut tunnels = Vec::new();
    let mut notes = Vec::new();
    for (i, f) in forwarders.iter().enumerate() {
        // yaml.v2/v3 spellings and the JSON ones cloudflared also reads.
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| f[*n].as_str().map(str::trim).filter(|s| !s.is_empty()))
                .map(str::to_string)
        };
        let at = |what: &str| bad(format!("forwarder #{}: {what}", i + 1));
        let hostname = field(&["url", "hostname"]).ok_or_else(|| at("has no `url`"))?;
        let listen = field(&["listener"]).ok_or_else(|| at("has no `listener`"))?;
        let listen = listen
            .split_once("://")
            .map_or(listen.clone(), |(_, r)| r.to_string());
        let host = hostname
            .split_once("://")
            .map_or(hostname.as_str(), |(_, r)| r);
        let host = host.split(['/', ':']).next().unwrap_or(host);
        let name = host.to_string();
        let id = field(&["serviceTokenID", "servicetokenid", "service_token_id"]);
        let secret = field(&[
            "serviceTokenSecret",
            "servicetokensecret",
            "secret_token_id",
        ]);
        let var = |suffix: &str| env_var_name(host, suffix);
        let (id_env, secret_env) = match (&id, &secret) {
            (Some(id), Some(_)) => {
                let (i, s) = (var("ID"), var("SECRET"));
                notes.push(format!(
                    "{name}: set {i}={id} and {s} to its service token secret (not copied from {})",
                    path.display()
                ));
                (Some(i), Some(s))
            }
            (None, None) => (None, None),
            _ => {
                return Err(at(
                    "has only half a service token (id and secret go together)",
                ));
            }
        };
        tunnels.push(Imported {
            name,
            hostname,
            listen,
            destination: field(&["destination"]),
            service_token_id_env: id_env,
            service_token_secret_env: secret_env,
        });
    }
    #[derive(serde::Serialize)]
    struct Out {
        tunnels: Vec<Imported>,
    }
    let body = toml::to_string(&Out { tunnels }).map_err(|e| bad(e.to_string()))?;
    let head = format!(
        "# Imported from {} by `tunnel up --from-cloudflared`.\n# Check it with `tunnel up --check --config FILE`.\n\n",
        path.display()
    );
    Ok((head + &body, notes))
}
