//! `edge.toml`: parsed once (unknown keys refused), validated once, into [`Config`].
//! The key names are a contract (the README's "The edge" shows them all); relative
//! paths are relative to the config file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::host_port::{self, Port};
use crate::secret::Secret;

mod check;

use check::{app, login_limits, service_tokens, users};

/// A config file that cannot be used, with the reason on one line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    auth_domain: String,
    #[serde(default = "default_signing_key")]
    signing_key: PathBuf,
    #[serde(default)]
    apps: Vec<RawApp>,
    #[serde(default)]
    service_tokens: Vec<RawServiceToken>,
    #[serde(default)]
    users: Vec<RawUser>,
    transfer_url: Option<String>,
    stats_interval: Option<String>,
    keepalive_interval: Option<String>,
    keepalive_timeout: Option<String>,
    #[serde(default)]
    login_limits: RawLoginLimits,
}

/// `[login_limits]`: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoginLimits {
    address_attempts: Option<u32>,
    address_window: Option<String>,
    account_attempts: Option<u32>,
    account_window: Option<String>,
    concurrent_hashes: Option<u32>,
}

fn default_signing_key() -> PathBuf {
    PathBuf::from("signing-key.pem")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    hostname: String,
    origin: Option<String>,
    destinations: Option<Vec<String>>,
    #[serde(default)]
    allow: Vec<String>,
    session: Option<String>,
    aud: Option<String>,
    resume_window: Option<String>,
    resume_buffer: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceToken {
    name: String,
    client_id: String,
    client_secret: Option<Secret>,
    client_secret_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    email: String,
    password_hash: Secret,
}

/// The validated edge configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS certificate chain and key (PEM), when serving `wss://`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Issuer of our JWTs (`https://<auth_domain>`), may carry a port.
    pub auth_domain: String,
    /// RSA signing key (PEM), created on first start when missing.
    pub signing_key: PathBuf,
    /// The apps, in config order (first match wins).
    pub apps: Vec<App>,
    /// Known service tokens.
    pub service_tokens: Vec<ServiceToken>,
    /// Local login identities.
    pub users: Vec<User>,
    /// Base URL of the login hand-off service announced in app metadata
    /// (default: `<scheme>://<auth_domain>`, served by this edge).
    pub transfer_url: Option<String>,
    /// How often the edge logs its activity summary at `info` (default 60 s).
    pub stats_interval: Duration,
    /// How each stream checks that its client is alive (`keepalive_interval`,
    /// `keepalive_timeout`; the client's defaults, 54 s and 60 s).
    pub keepalive: crate::bridge::Keepalive,
    /// Limits on login attempts (`[login_limits]`).
    pub login_limits: LoginLimits,
}

/// How many login attempts the login page takes, and how many password checks
/// run at once. Each limit allows `attempts` per `window`, refilled evenly over the
/// window; a key that keeps at it then meets a slower tier of three times the
/// attempts per twelve windows, so the delays grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLimits {
    /// Attempts per client address (an IPv6 address counts by its /64).
    pub address_attempts: u32,
    /// The window of `address_attempts`.
    pub address_window: Duration,
    /// Attempts per account (the email typed in), from any address.
    pub account_attempts: u32,
    /// The window of `account_attempts`.
    pub account_window: Duration,
    /// Password checks (argon2) running at once; more wait their turn.
    pub concurrent_hashes: u32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            address_attempts: 20,
            address_window: Duration::from_secs(60),
            account_attempts: 10,
            account_window: Duration::from_secs(300),
            concurrent_hashes: 2,
        }
    }
}

/// Default of `stats_interval`.
pub const STATS_INTERVAL: Duration = Duration::from_secs(60);

/// Where an app's streams go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Always this TCP origin.
    Origin(String),
    /// Bastion mode: the client names one of these in `Cf-Access-Jump-Destination`.
    Destinations(Vec<String>),
}

/// One protected app.
#[derive(Debug, Clone)]
pub struct App {
    /// Hostname pattern: exact, or `*.example.test`.
    pub hostname: String,
    /// Where streams go.
    pub upstream: Upstream,
    /// Emails allowed in (exact, lower case).
    pub allow_emails: Vec<String>,
    /// Service token names allowed in.
    pub allow_services: Vec<String>,
    /// Lifetime of tokens issued for this app.
    pub session: Duration,
    /// The AUD tag.
    pub aud: String,
    /// How long a stream whose WebSocket broke waits for its client to resume it
    /// (README: "Resumable streams"); zero: streams are not resumable.
    pub resume_window: Duration,
    /// Bytes each direction of a resumable stream holds for a replay, at most
    /// (the edge's side; backpressure when full).
    pub resume_buffer: usize,
}

/// Default of an app's `resume_window`.
pub const RESUME_WINDOW: Duration = Duration::from_secs(300);

/// A service token.
#[derive(Debug, Clone)]
pub struct ServiceToken {
    /// Name used in `allow = ["service:NAME"]`.
    pub name: String,
    /// Sent as `Cf-Access-Client-Id`.
    pub client_id: String,
    /// SHA-256 of the secret (from `client_secret` or `client_secret_sha256`).
    pub secret_sha256: [u8; 32],
}

/// A local login identity.
#[derive(Debug, Clone)]
pub struct User {
    /// Login email (lower case).
    pub email: String,
    /// PHC password hash.
    pub password_hash: Secret,
}

impl Config {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: format!("cannot read the config file: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|message| ConfigError {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parse and validate config text; relative paths are resolved against `base`.
    /// The error is one line naming the key at fault.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            format!(
                "listen = {:?} is not an address such as 127.0.0.1:7000 or [::]:443",
                raw.listen
            )
        })?;
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
            (None, None) => None,
            _ => return Err("tls_cert and tls_key go together: set both, or neither".into()),
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err(format!(
                "listen = \"{listen}\" is not a loopback address, so plain HTTP is refused: set tls_cert and tls_key"
            ));
        }
        let auth_domain = raw.auth_domain.trim().to_ascii_lowercase();
        host_port::parse("auth_domain", &raw.auth_domain, Port::Optional)
            .map_err(|e| e.to_string())?;

        let (service_tokens, names) = service_tokens(raw.service_tokens)?;
        let users = users(raw.users)?;
        if raw.apps.is_empty() {
            return Err("no [[apps]]: add at least one app with hostname, origin and allow".into());
        }
        let mut hosts = HashSet::new();
        let apps = raw
            .apps
            .into_iter()
            .enumerate()
            .map(|(i, a)| app(i, a, &names, &mut hosts))
            .collect::<Result<Vec<_>, _>>()?;
        let login_limits = login_limits(raw.login_limits)?;
        Ok(Config {
            login_limits,
            listen,
            tls,
            auth_domain,
            signing_key: base.join(raw.signing_key),
            apps,
            service_tokens,
            users,
            transfer_url: match raw.transfer_url {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    Some(u.trim_end_matches('/').to_string())
                }
                Some(u) => {
                    return Err(format!(
                        "transfer_url = {u:?} must start with http:// or https://"
                    ));
                }
                None => None,
            },
            keepalive: crate::bridge::Keepalive {
                interval: positive("keepalive_interval", raw.keepalive_interval, "54s")?,
                timeout: positive("keepalive_timeout", raw.keepalive_timeout, "60s")?,
            },
            stats_interval: match raw.stats_interval.as_deref() {
                None => STATS_INTERVAL,
                Some(s) => humantime::parse_duration(s)
                    .ok()
                    .filter(|d| *d >= Duration::from_secs(1))
                    .ok_or_else(|| {
                        format!(
                            "stats_interval = {s:?} is not a duration of at least 1s, e.g. \"60s\""
                        )
                    })?,
            },
        })
    }
}

/// A duration key above zero, `default` when absent; the error names the key.
fn positive(key: &str, raw: Option<String>, default: &str) -> Result<Duration, String> {
    let text = raw.as_deref().unwrap_or(default);
    humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{key} = {text:?} is not a duration above zero, e.g. {default:?}"))
}

/// The AUD tag of an app with none configured: 64 hex digits derived from the
/// hostname pattern, so it is stable across restarts and machines.
pub fn derive_aud(hostname: &str) -> String {
    let digest = crate::protocol::sha256(format!("tunnel-aud:{hostname}").as_bytes());
    crate::protocol::hex(&digest)
}

/// One line from a TOML error: the message plus the line it points at.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:7000"
auth_domain = "auth.example.test"
[[apps]]
hostname = "db.example.test"
origin = "127.0.0.1:5432"
allow = ["alice@example.test", "service:ci"]
session = "1h"
[[apps]]
hostname = "*.ssh.example.test"
destinations = ["10.1.2.3:22"]
allow = ["service:ci"]
[[service_tokens]]
name = "ci"
client_id = "ci.access"
client_secret = "s3cret"
"#;

    #[test]
    fn the_design_example_parses() {
        let c = Config::parse(GOOD, Path::new("/etc/tunnel")).unwrap();
        assert_eq!(c.apps.len(), 2);
        assert_eq!(c.apps[0].session, Duration::from_secs(3600));
        assert_eq!(c.apps[0].aud, derive_aud("db.example.test"));
        assert_eq!(c.signing_key, Path::new("/etc/tunnel/signing-key.pem"));
        assert!(format!("{c:?}").contains("secret_sha256"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.login_limits, LoginLimits::default());
        let tuned =
            format!("{GOOD}\n[login_limits]\naddress_attempts = 3\naddress_window = \"500ms\"\n");
        let c = Config::parse(&tuned, Path::new(".")).unwrap();
        assert_eq!(c.login_limits.address_attempts, 3);
        assert_eq!(c.login_limits.address_window, Duration::from_millis(500));
        assert_eq!(c.login_limits.account_attempts, 10);
        // host:port values by the one parser: written back in its form.
        let text = GOOD
            .replace("auth.example.test", "Auth.Example.test:8443")
            .replace("127.0.0.1:5432", " [::1]:5432 ");
        let c = Config::parse(&text, Path::new(".")).unwrap();
        assert_eq!(c.auth_domain, "auth.example.test:8443");
        assert!(matches!(&c.apps[0].upstream, Upstream::Origin(o) if o == "[::1]:5432"));
    }

    #[test]
    fn keepalive_defaults_to_the_clients_and_takes_durations_above_zero() {
        let c = Config::parse(GOOD, Path::new("/etc/tunnel")).unwrap();
        assert_eq!(c.keepalive, crate::bridge::Keepalive::default());
        let text = GOOD.replacen(
            "auth_domain",
            "keepalive_interval = \"20s\"\nkeepalive_timeout = \"5s\"\nauth_domain",
            1,
        );
        let c = Config::parse(&text, Path::new("/etc/tunnel")).unwrap();
        assert_eq!(c.keepalive.interval, Duration::from_secs(20));
        assert_eq!(c.keepalive.timeout, Duration::from_secs(5));
        for bad in [
            "keepalive_interval = \"0s\"",
            "keepalive_timeout = \"soon\"",
        ] {
            let text = GOOD.replacen("auth_domain", &format!("{bad}\nauth_domain"), 1);
            let e = Config::parse(&text, Path::new("/etc/tunnel")).unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(e.starts_with(key) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn resume_buffer_defaults_to_512_kib_and_takes_128_kib_to_64_mib() {
        let c = Config::parse(GOOD, Path::new(".")).unwrap();
        assert_eq!(c.apps[0].resume_buffer, crate::bridge::resume::REPLAY_LIMIT);
        let with = |n: &str| {
            let text = format!(
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\n[[apps]]\nhostname=\"x\"\norigin=\"a:1\"\nallow=[\"a@b\"]\nresume_buffer = {n}"
            );
            Config::parse(&text, Path::new(".")).map(|c| c.apps[0].resume_buffer)
        };
        assert_eq!(with("131072"), Ok(131072));
        assert_eq!(with("67108864"), Ok(64 << 20));
        for bad in ["65536", "67108865", "0"] {
            let e = with(bad).unwrap_err();
            assert!(e.contains("resume_buffer") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn resume_window_defaults_to_five_minutes_and_zero_turns_it_off() {
        let c = Config::parse(GOOD, Path::new(".")).unwrap();
        assert_eq!(c.apps[0].resume_window, RESUME_WINDOW);
        let app = |w: &str| {
            let text = format!(
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\n[[apps]]\nhostname=\"x\"\norigin=\"a:1\"\nallow=[\"a@b\"]\nresume_window = {w}"
            );
            Config::parse(&text, Path::new(".")).map(|c| c.apps[0].resume_window)
        };
        assert_eq!(app("\"0\""), Ok(Duration::ZERO));
        assert_eq!(app("\"90s\""), Ok(Duration::from_secs(90)));
        for bad in ["\"soon\"", "\"25h\""] {
            let e = app(bad).unwrap_err();
            assert!(e.contains("resume_window") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn bad_configs_name_the_problem_on_one_line() {
        let cases = [
            ("listen = 1", "line 1"),
            (
                "listen = \"0.0.0.0:7000\"\nauth_domain = \"a\"\n[[apps]]\nhostname=\"x\"\norigin=\"a:1\"\nallow=[\"a@b\"]",
                "loopback",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\nbogus = 1",
                "bogus",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\n[login_limits]\nbogus = 1",
                "bogus",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\n[login_limits]\naddress_window = \"soon\"\n[[apps]]\nhostname=\"x\"\norigin=\"a:1\"\nallow=[\"a@b\"]",
                "login_limits.address_window",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\n[login_limits]\naccount_attempts = 0\n[[apps]]\nhostname=\"x\"\norigin=\"a:1\"\nallow=[\"a@b\"]",
                "login_limits.account_attempts",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"",
                "no [[apps]]",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\n[[apps]]\nhostname=\"x\"\norigin=\"a:1\"\nallow=[\"service:nope\"]",
                "nope",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\n[[apps]]\nhostname=\"x\"\norigin=\"a\"\nallow=[\"a@b\"]",
                "origin",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\n[[users]]\nemail=\"a@b\"\npassword_hash=\"$argon2id$...\"",
                "users[0] (a@b): password_hash is not an argon2 PHC string",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\nstats_interval = \"0s\"\n[[apps]]\nhostname=\"x\"\norigin=\"a:1\"\nallow=[\"a@b\"]",
                "stats_interval",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"auth.test:\"\n[[apps]]\nhostname=\"x\"\norigin=\"a:1\"\nallow=[\"a@b\"]",
                "invalid auth_domain \"auth.test:\": the port is empty",
            ),
            (
                "listen = \"127.0.0.1:1\"\nauth_domain = \"a\"\n[[apps]]\nhostname=\"x\"\norigin=\"::1:22\"\nallow=[\"a@b\"]",
                "invalid apps[0] (x) origin \"::1:22\": an IPv6 address needs brackets",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::parse(text, Path::new(".")).unwrap_err();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }
}
