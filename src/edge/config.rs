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

/// The `[[service_tokens]]`, checked, and their names (for `allow`).
fn service_tokens(
    raw: Vec<RawServiceToken>,
) -> Result<(Vec<ServiceToken>, HashSet<String>), String> {
    let mut service_tokens = Vec::new();
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for (i, t) in raw.into_iter().enumerate() {
        let at = format!("service_tokens[{i}] ({})", t.name);
        if t.name.is_empty() || !names.insert(t.name.clone()) {
            return Err(format!("{at}: name must be present and unique"));
        }
        if t.client_id.is_empty() || !ids.insert(t.client_id.clone()) {
            return Err(format!("{at}: client_id must be present and unique"));
        }
        let secret_sha256 = match (&t.client_secret, &t.client_secret_sha256) {
            (Some(s), None) if !s.expose().is_empty() => {
                crate::protocol::sha256(s.expose().as_bytes())
            }
            (None, Some(hex)) => parse_sha256_hex(hex)
                .ok_or_else(|| format!("{at}: client_secret_sha256 must be 64 hex digits"))?,
            _ => {
                return Err(format!(
                    "{at}: set exactly one of client_secret and client_secret_sha256"
                ));
            }
        };
        service_tokens.push(ServiceToken {
            name: t.name,
            client_id: t.client_id,
            secret_sha256,
        });
    }

    Ok((service_tokens, names))
}

/// The `[[users]]`, checked: each could log in.
fn users(raw: Vec<RawUser>) -> Result<Vec<User>, String> {
    let mut users = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let email = u.email.trim().to_ascii_lowercase();
        if !email.contains('@') {
            return Err(format!(
                "users[{i}]: email {:?} is not an email address",
                u.email
            ));
        }
        if let Err(why) = check_hash(u.password_hash.expose()) {
            return Err(format!(
                "users[{i}] ({email}): password_hash is {why}, so this user could never log in; make one with `tunnel edge hash-password`"
            ));
        }
        users.push(User {
            email,
            password_hash: u.password_hash,
        });
    }

    Ok(users)
}

/// `[[apps]]` entry `i`, checked against the service token `names`; its hostname
/// must not be in `hosts` yet (it is added).
fn app(
    i: usize,
    a: RawApp,
    names: &HashSet<String>,
    hosts: &mut HashSet<String>,
) -> Result<App, String> {
    let at = format!("apps[{i}] ({})", a.hostname);
    let hostname = a.hostname.trim().to_ascii_lowercase();
    if !valid_pattern(&hostname) {
        return Err(format!(
            "{at}: hostname must be a host name, optionally starting with \"*.\" (e.g. db.example.test)"
        ));
    }
    if !hosts.insert(hostname.clone()) {
        return Err(format!("{at}: hostname appears twice"));
    }
    let upstream = match (a.origin, a.destinations) {
        (Some(o), None) => Upstream::Origin(host_port(&format!("{at} origin"), &o)?),
        (None, Some(d)) if !d.is_empty() => Upstream::Destinations(
            d.iter()
                .map(|x| host_port(&format!("{at} destination"), x))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(format!(
                "{at}: set exactly one of origin and destinations (non-empty)"
            ));
        }
    };
    let mut allow_emails = Vec::new();
    let mut allow_services = Vec::new();
    for entry in a.allow {
        if let Some(name) = entry.strip_prefix("service:") {
            if !names.contains(name) {
                return Err(format!(
                    "{at}: allow names service token {name:?}, which no [[service_tokens]] defines"
                ));
            }
            allow_services.push(name.to_string());
        } else if entry.contains('@') {
            allow_emails.push(entry.trim().to_ascii_lowercase());
        } else {
            return Err(format!(
                "{at}: allow entry {entry:?} is neither an email nor \"service:NAME\""
            ));
        }
    }
    if allow_emails.is_empty() && allow_services.is_empty() {
        return Err(format!("{at}: allow is empty, so nobody could ever enter"));
    }
    let session = match a.session.as_deref() {
        None => Duration::from_secs(24 * 3600),
        Some(s) => humantime::parse_duration(s)
            .ok()
            .filter(|d| *d >= Duration::from_secs(1))
            .ok_or_else(|| {
                format!("{at}: session {s:?} is not a duration of at least 1s, e.g. \"24h\"")
            })?,
    };
    let aud = match a.aud {
        Some(aud) if !aud.trim().is_empty() => aud.trim().to_string(),
        Some(_) => return Err(format!("{at}: aud is empty")),
        None => derive_aud(&hostname),
    };
    Ok(App {
        hostname,
        upstream,
        allow_emails,
        allow_services,
        session,
        aud,
        resume_window: resume_window(&at, a.resume_window.as_deref())?,
    })
}

/// An app's `resume_window`: the default when absent, zero for `"0"` (streams are
/// not resumable), else a duration of at most a day.
fn resume_window(at: &str, raw: Option<&str>) -> Result<Duration, String> {
    match raw.map(str::trim) {
        None => Ok(RESUME_WINDOW),
        Some("0") => Ok(Duration::ZERO),
        Some(s) => humantime::parse_duration(s)
            .ok()
            .filter(|d| *d <= Duration::from_secs(24 * 3600))
            .ok_or_else(|| {
                format!(
                    "{at}: resume_window {s:?} is not a duration of at most 24h, e.g. \"5m\" (or \"0\" to turn resuming off)"
                )
            }),
    }
}

/// Whether `hash` is a password hash the login page can verify: an argon2 PHC
/// string with valid parameters. The reason when not (never the hash itself).
fn check_hash(hash: &str) -> Result<(), &'static str> {
    use argon2::password_hash::PasswordHash;
    let parsed = PasswordHash::new(hash).map_err(|_| "not an argon2 PHC string")?;
    argon2::Algorithm::try_from(parsed.algorithm).map_err(|_| "not an argon2 hash")?;
    argon2::Params::try_from(&parsed).map_err(|_| "an argon2 hash with invalid parameters")?;
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("an argon2 hash without its salt or digest");
    }
    Ok(())
}

fn login_limits(raw: RawLoginLimits) -> Result<LoginLimits, String> {
    let d = LoginLimits::default();
    let count = |key: &str, v: Option<u32>, default: u32| match v {
        None => Ok(default),
        Some(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "login_limits.{key} = {n} must be between 1 and 1000000"
        )),
    };
    let window = |key: &str, v: Option<&str>, default: Duration| match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s)
            .ok()
            .filter(|w| *w >= Duration::from_millis(10) && *w <= Duration::from_secs(86_400))
            .ok_or_else(|| {
                format!(
                    "login_limits.{key} = {s:?} is not a duration between 10ms and 24h, e.g. \"1m\""
                )
            }),
    };
    Ok(LoginLimits {
        address_attempts: count("address_attempts", raw.address_attempts, d.address_attempts)?,
        address_window: window(
            "address_window",
            raw.address_window.as_deref(),
            d.address_window,
        )?,
        account_attempts: count("account_attempts", raw.account_attempts, d.account_attempts)?,
        account_window: window(
            "account_window",
            raw.account_window.as_deref(),
            d.account_window,
        )?,
        concurrent_hashes: match raw.concurrent_hashes {
            None => d.concurrent_hashes,
            Some(n) if (1..=64).contains(&n) => n,
            Some(n) => {
                return Err(format!(
                    "login_limits.concurrent_hashes = {n} must be between 1 and 64"
                ));
            }
        },
    })
}

/// The AUD tag of an app with none configured: 64 hex digits derived from the
/// hostname pattern, so it is stable across restarts and machines.
pub fn derive_aud(hostname: &str) -> String {
    let digest = crate::protocol::sha256(format!("tunnel-aud:{hostname}").as_bytes());
    crate::protocol::hex(&digest)
}

fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

fn valid_pattern(host: &str) -> bool {
    let rest = host.strip_prefix("*.").unwrap_or(host);
    !rest.is_empty()
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An `origin` or `destinations` entry, checked and written the one way
/// ([`crate::protocol::host_port`]) so the edge dials and compares that form.
fn host_port(what: &str, value: &str) -> Result<String, String> {
    host_port::parse(what, value, Port::Required)
        .map(|hp| hp.to_string())
        .map_err(|e| e.to_string())
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
