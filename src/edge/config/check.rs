//! The checks of `edge.toml`'s sections, each raw section into its checked form
//! with a one-line error naming the key: service tokens, users, apps, login limits.

use std::collections::HashSet;
use std::time::Duration;

use super::{
    App, LoginLimits, RESUME_WINDOW, RawApp, RawLoginLimits, RawServiceToken, RawUser,
    ServiceToken, Upstream, User, derive_aud,
};
use crate::protocol::host_port::{self, Port};

/// The `[[service_tokens]]`, checked, and their names (for `allow`).
pub(super) fn service_tokens(
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
pub(super) fn users(raw: Vec<RawUser>) -> Result<Vec<User>, String> {
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
pub(super) fn app(
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
        resume_buffer: resume_buffer(&at, a.resume_buffer)?,
    })
}

/// An app's `resume_buffer` in bytes: the default when absent, else from twice the
/// acknowledgement interval (a smaller buffer would wait for the idle timer's
/// acknowledgement on a busy stream) to 64 MiB.
fn resume_buffer(at: &str, raw: Option<u64>) -> Result<usize, String> {
    const MIN: u64 = 2 * crate::bridge::resume::ACK_EVERY;
    const MAX: u64 = 64 << 20;
    match raw {
        None => Ok(crate::bridge::resume::REPLAY_LIMIT),
        Some(n) if (MIN..=MAX).contains(&n) => Ok(n as usize),
        Some(n) => Err(format!(
            "{at}: resume_buffer = {n} is not a byte count from {MIN} (128 KiB) to {MAX} (64 MiB)"
        )),
    }
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

/// `[login_limits]`, checked: every count at least 1, every window a duration.
pub(super) fn login_limits(raw: RawLoginLimits) -> Result<LoginLimits, String> {
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
