//! Who may enter which app, and where their stream goes. Pure functions over the
//! request headers, so they are unit-tested and fuzzed without a server. Every
//! check fails closed.

use http::HeaderMap;
use subtle::ConstantTimeEq;

use super::config::{App, Config, Upstream};
use super::issuer::Issuer;
use crate::protocol;
use crate::protocol::host_port::Port;

/// Who a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A login identity, by email.
    User(String),
    /// A service token, by name.
    Service(String),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::User(e) => f.write_str(e),
            Identity::Service(n) => write!(f, "service:{n}"),
        }
    }
}

/// The outcome of checking a request against an app's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Allow(Identity),
    /// No usable credentials: answer with the login redirect (as Access does), with
    /// a short reason that is safe to show.
    Login(String),
    /// Authenticated but not allowed into this app.
    Forbidden(String),
}

/// The first app whose pattern matches `host` (lower case, no port).
pub fn find_app<'a>(apps: &'a [App], host: &str) -> Option<&'a App> {
    apps.iter().find(|a| host_matches(&a.hostname, host))
}

/// `*.example.test` matches any host ending in `.example.test` (not the apex);
/// anything else matches exactly.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// The `Host` header without its port, lower case. `None` when absent or invalid
/// by the one `host:port` parser's rules ([`protocol::host_port`]).
pub fn request_host(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(http::header::HOST)?.to_str().ok()?;
    let host = protocol::host_port::parse("Host", raw, Port::Optional).ok()?;
    Some(host.host().to_ascii_lowercase())
}

/// Refuse a request whose target host is ambiguous: more than one `Host` header,
/// or an absolute-form URI (`GET http://a/ HTTP/1.1`) whose authority is not the
/// `Host` header's value. Routing by one and checking by the other would let a
/// request be judged for one app and served as another.
pub fn single_authority(uri: &http::Uri, headers: &HeaderMap) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    if let Some(authority) = uri.authority() {
        let same = host
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.trim().eq_ignore_ascii_case(authority.as_str()));
        if !same {
            return Err("the request URI names another host than the Host header");
        }
    }
    Ok(())
}

/// The value of cookie `name`, if present.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Check the credentials on a request for `app`: the `Cf-Access-Token` header,
/// else a service token, else the `CF_Authorization` cookie (a browser's). A
/// stray cookie never overrides credentials a client sent on purpose.
pub fn authorize(config: &Config, issuer: &Issuer, app: &App, headers: &HeaderMap) -> Decision {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let service =
        header(protocol::CLIENT_ID).is_some() || header(protocol::CLIENT_SECRET).is_some();
    let token = header(protocol::ACCESS_TOKEN).or_else(|| {
        if service {
            None
        } else {
            cookie(headers, protocol::AUTH_COOKIE)
        }
    });
    if let Some(token) = token {
        return match issuer.verify(token.trim(), &app.aud) {
            Ok(claims) => {
                let identity = match (claims.email, claims.common_name) {
                    (Some(email), _) => Identity::User(email.to_ascii_lowercase()),
                    (None, Some(name)) => Identity::Service(name),
                    (None, None) => return Decision::Login("token names nobody".into()),
                };
                admit(app, identity)
            }
            Err(e) => Decision::Login(e.to_string()),
        };
    }
    match (header(protocol::CLIENT_ID), header(protocol::CLIENT_SECRET)) {
        (Some(id), Some(secret)) => match check_service_token(config, id, secret) {
            Some(name) => admit(app, Identity::Service(name)),
            None => Decision::Login("invalid service token".into()),
        },
        (Some(_), None) | (None, Some(_)) => Decision::Login(
            "service token needs both Cf-Access-Client-Id and Cf-Access-Client-Secret".into(),
        ),
        (None, None) => Decision::Login("no credentials".into()),
    }
}

/// The name of the service token with this id and secret. The secret is compared
/// (as its SHA-256) in constant time against every token, so timing reveals nothing.
pub fn check_service_token(config: &Config, id: &str, secret: &str) -> Option<String> {
    let presented: [u8; 32] = crate::protocol::sha256(secret.as_bytes());
    let mut found = None;
    for t in &config.service_tokens {
        let secret_ok = t.secret_sha256.ct_eq(&presented);
        if bool::from(secret_ok) && t.client_id == id {
            found = Some(t.name.clone());
        }
    }
    found
}

fn admit(app: &App, identity: Identity) -> Decision {
    let allowed = match &identity {
        Identity::User(email) => app.allow_emails.iter().any(|a| a == email),
        Identity::Service(name) => app.allow_services.iter().any(|a| a == name),
    };
    if allowed {
        Decision::Allow(identity)
    } else {
        Decision::Forbidden(format!("{identity} is not allowed into {}", app.hostname))
    }
}

/// Where this request's stream goes: the app's origin, or (bastion mode) the
/// `Cf-Access-Jump-Destination` it names, only when the app lists it. The error is
/// safe to show the client.
pub fn upstream(app: &App, headers: &HeaderMap) -> Result<String, String> {
    let jump = headers
        .get(protocol::JUMP_DESTINATION)
        .map(|v| v.to_str().map(str::trim));
    match (&app.upstream, jump) {
        (Upstream::Origin(o), None) => Ok(o.clone()),
        (Upstream::Origin(_), Some(_)) => {
            Err("this app takes no jump destination; drop --destination".into())
        }
        (Upstream::Destinations(_), None) => {
            Err("this app is a bastion: name a destination with --destination host:port".into())
        }
        (Upstream::Destinations(list), Some(Ok(dest))) => {
            // Accept `ssh://host:port` as cloudflared users sometimes write it.
            let dest = dest
                .split_once("://")
                .map_or(dest, |(_, rest)| rest)
                .trim_end_matches('/');
            // Compared in the form the config's entries were written in.
            let parsed = protocol::host_port::parse("destination", dest, Port::Required)
                .map_err(|e| e.to_string())?
                .to_string();
            list.iter()
                .find(|d| d.eq_ignore_ascii_case(&parsed))
                .cloned()
                .ok_or_else(|| format!("destination {dest} is not allowed for this app"))
        }
        (Upstream::Destinations(_), Some(Err(_))) => Err("destination is not valid text".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            r#"
listen = "127.0.0.1:0"
auth_domain = "auth.test"
[[apps]]
hostname = "db.test"
origin = "127.0.0.1:5432"
allow = ["alice@example.test", "service:ci"]
[[apps]]
hostname = "*.ssh.test"
destinations = ["10.0.0.1:22"]
allow = ["service:ci"]
[[service_tokens]]
name = "ci"
client_id = "ci.access"
client_secret = "s3cret"
[[service_tokens]]
name = "other"
client_id = "other.access"
client_secret = "x"
"#,
            Path::new("."),
        )
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hosts_and_wildcards() {
        let c = config();
        assert_eq!(find_app(&c.apps, "db.test").unwrap().hostname, "db.test");
        assert_eq!(
            find_app(&c.apps, "a.ssh.test").unwrap().hostname,
            "*.ssh.test"
        );
        assert!(find_app(&c.apps, "ssh.test").is_none());
        assert!(find_app(&c.apps, "xdb.test").is_none());
        assert_eq!(
            request_host(&headers(&[("host", "DB.test:443")])).as_deref(),
            Some("db.test")
        );
        assert_eq!(
            request_host(&headers(&[("host", "[::1]:80")])).as_deref(),
            Some("::1")
        );
        assert_eq!(request_host(&headers(&[("host", "a/b")])), None);
        assert_eq!(request_host(&headers(&[("host", "[::1")])), None);
        assert_eq!(request_host(&headers(&[("host", "db.test:x")])), None);
        assert_eq!(
            request_host(&headers(&[("host", " db.test ")])).as_deref(),
            Some("db.test")
        );
    }

    #[test]
    fn service_tokens_are_checked_by_id_and_secret() {
        let c = config();
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::load_or_create(&dir.path().join("k.pem"), "auth.test").unwrap();
        let app = &c.apps[0];
        let ok = headers(&[
            (protocol::CLIENT_ID, "ci.access"),
            (protocol::CLIENT_SECRET, "s3cret"),
        ]);
        assert_eq!(
            authorize(&c, &issuer, app, &ok),
            Decision::Allow(Identity::Service("ci".into()))
        );
        let wrong = headers(&[
            (protocol::CLIENT_ID, "ci.access"),
            (protocol::CLIENT_SECRET, "x"),
        ]);
        assert!(matches!(
            authorize(&c, &issuer, app, &wrong),
            Decision::Login(_)
        ));
        // Right secret of another token with this id: refused.
        let swapped = headers(&[
            (protocol::CLIENT_ID, "other.access"),
            (protocol::CLIENT_SECRET, "s3cret"),
        ]);
        assert!(matches!(
            authorize(&c, &issuer, app, &swapped),
            Decision::Login(_)
        ));
        let not_allowed = headers(&[
            (protocol::CLIENT_ID, "other.access"),
            (protocol::CLIENT_SECRET, "x"),
        ]);
        assert!(matches!(
            authorize(&c, &issuer, app, &not_allowed),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            authorize(&c, &issuer, app, &HeaderMap::new()),
            Decision::Login(_)
        ));
    }

    #[test]
    fn tokens_are_bound_to_their_app() {
        let c = config();
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::load_or_create(&dir.path().join("k.pem"), "auth.test").unwrap();
        let t = issuer.mint(
            &c.apps[0].aud,
            "alice@example.test",
            std::time::Duration::from_secs(60),
        );
        let h = headers(&[(protocol::ACCESS_TOKEN, &t)]);
        assert_eq!(
            authorize(&c, &issuer, &c.apps[0], &h),
            Decision::Allow(Identity::User("alice@example.test".into()))
        );
        let as_cookie = headers(&[("cookie", &format!("a=b; CF_Authorization={t}"))]);
        assert!(matches!(
            authorize(&c, &issuer, &c.apps[0], &as_cookie),
            Decision::Allow(_)
        ));
        assert_eq!(
            authorize(&c, &issuer, &c.apps[1], &h),
            Decision::Login("token issued for another app".into())
        );
    }

    #[test]
    fn a_stray_cookie_does_not_override_a_service_token() {
        let c = config();
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::load_or_create(&dir.path().join("k.pem"), "auth.test").unwrap();
        let h = headers(&[
            (protocol::CLIENT_ID, "ci.access"),
            (protocol::CLIENT_SECRET, "s3cret"),
            ("cookie", "CF_Authorization=stale.or.foreign"),
        ]);
        assert_eq!(
            authorize(&c, &issuer, &c.apps[0], &h),
            Decision::Allow(Identity::Service("ci".into()))
        );
    }

    #[test]
    fn the_target_host_must_be_unambiguous() {
        let uri = |u: &str| u.parse::<http::Uri>().unwrap();
        let one = headers(&[("host", "db.test")]);
        assert!(single_authority(&uri("/x"), &one).is_ok());
        assert!(single_authority(&uri("http://DB.test/x"), &one).is_ok());
        assert!(single_authority(&uri("http://evil.test/x"), &one).is_err());
        assert!(single_authority(&uri("http://db.test:8080/x"), &one).is_err());
        let two = headers(&[("host", "db.test"), ("host", "evil.test")]);
        assert!(single_authority(&uri("/x"), &two).is_err());
        assert!(single_authority(&uri("http://db.test/"), &HeaderMap::new()).is_err());
    }

    #[test]
    fn jump_destinations_only_when_listed() {
        let c = config();
        let none = HeaderMap::new();
        assert_eq!(upstream(&c.apps[0], &none).unwrap(), "127.0.0.1:5432");
        let j = |d: &str| headers(&[(protocol::JUMP_DESTINATION, d)]);
        assert!(upstream(&c.apps[0], &j("10.0.0.1:22")).is_err());
        assert_eq!(
            upstream(&c.apps[1], &j("10.0.0.1:22")).unwrap(),
            "10.0.0.1:22"
        );
        assert_eq!(
            upstream(&c.apps[1], &j("ssh://10.0.0.1:22")).unwrap(),
            "10.0.0.1:22"
        );
        assert!(upstream(&c.apps[1], &j("10.0.0.2:22")).is_err());
        assert!(upstream(&c.apps[1], &none).is_err());
        // Compared as parsed: a leading zero in the port or spaces around do not
        // make a listed destination a stranger; a malformed one says what is wrong.
        assert_eq!(
            upstream(&c.apps[1], &j(" 10.0.0.1:022")).unwrap(),
            "10.0.0.1:22"
        );
        assert_eq!(
            upstream(&c.apps[1], &j("::1:22")).unwrap_err(),
            "invalid destination \"::1:22\": an IPv6 address needs brackets, as in [::1]:22; expected host:port, e.g. 10.0.0.5:22 or [::1]:22"
        );
    }
}
