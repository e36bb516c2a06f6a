//! The `tunnel up` file: its format, read and checked once into [`Tunnel`]s (every
//! tunnel's flags checked as `tcp` checks them, names and listen addresses unique).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::login::OrgLocks;
use crate::cli::{AccessArgs, Reach};
use crate::client::listen;
use crate::client::target::TargetBuilder;
use crate::console::Notice;
use crate::error::Error;

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
/// would check them (which builds its [`Target`](crate::client::target::Target),
/// once, sharing `locks` when given), names and listen addresses are unique, and
/// named environment variables and token files exist. Errors name the file (and
/// line, for syntax).
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
        let listen = listen_addresses(&t.listen).map_err(at)?;
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

/// A tunnel's `listen`, one address or many, each checked as `--url` is.
fn listen_addresses(listen: &OneOrMany) -> Result<Vec<String>, String> {
    let listen = match listen {
        OneOrMany::One(a) => vec![a.clone()],
        OneOrMany::Many(v) => v.clone(),
    };
    if listen.is_empty() {
        return Err("`listen` is empty; give one or more host:port".into());
    }
    for a in &listen {
        listen::parse_url("`listen`", a).map_err(|e| e.to_string())?;
    }
    Ok(listen)
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
