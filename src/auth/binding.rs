//! Which token may go where (README: "What the client sends to whom"): the rules that keep
//! a token with the edge that issued it. Pure functions, so each rule is tested on
//! its own.
//!
//! Why they are needed: app metadata is signed by whatever auth domain it names, and
//! an app's AUD is public (it is the `kid=` of every login redirect). Without these
//! rules, any server with a trusted certificate could claim another app's hostname
//! and AUD under its own auth domain and receive that app's cached token.

use super::jwt::TokenClaims;
use crate::protocol::host_port::{self, Port};
use crate::protocol::metadata::AppMetadata;

/// The `iss` of tokens issued by `auth_domain`: `https://<auth_domain>`.
pub fn issuer(auth_domain: &str) -> String {
    format!("https://{auth_domain}")
}

/// Whether the app pattern `app_hostname` (as in metadata: may start with `*.`, may
/// carry a path) covers `host`.
pub fn covers(app_hostname: &str, host: &str) -> bool {
    let pattern = app_hostname
        .split('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            suffix.starts_with('.') && host.len() > suffix.len() && host.ends_with(suffix)
        }
        None => !pattern.is_empty() && pattern == host,
    }
}

/// Whether verified metadata `meta` may speak for the dialled `host` at all: the
/// app it names must cover that host.
pub fn metadata_fits(meta: &AppMetadata, host: &str) -> bool {
    covers(&meta.app_hostname, host)
}

/// Whether a cached app token with `claims` may be offered to the edge of the app
/// described by verified metadata `meta`: issued by the auth domain whose keys signed
/// that metadata, for that app's AUD. (The host binding is [`metadata_fits`].)
pub fn app_token_fits(claims: &TokenClaims, meta: &AppMetadata) -> bool {
    claims.iss.as_deref() == Some(issuer(&meta.auth_domain).as_str())
        && claims.aud.contains(&meta.aud)
}

/// Whether a cached org token with `claims` belongs to `auth_domain`.
pub fn org_token_fits(claims: &TokenClaims, auth_domain: &str) -> bool {
    claims.iss.as_deref() == Some(issuer(auth_domain).as_str())
}

/// Whether the org token may be sent to `url`: the org token's own auth domain (host
/// and port), on a login path, over TLS. `plain_ok` allows `http` for a development
/// edge the user reaches over loopback.
pub fn org_token_may_go_to(url: &reqwest::Url, auth_domain: &str, plain_ok: bool) -> bool {
    let tls = url.scheme() == "https";
    if !(tls || plain_ok && url.scheme() == "http") {
        return false;
    }
    let Some((host, port)) = split_domain(auth_domain) else {
        return false;
    };
    let default = if tls { 443 } else { 80 };
    // `host_str` keeps an IPv6 address's brackets; the parser drops them.
    url.host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .is_some_and(|h| h.eq_ignore_ascii_case(host))
        && url.port_or_known_default() == Some(port.unwrap_or(default))
        && url.username().is_empty()
        && url.path().starts_with(crate::protocol::LOGIN_PATH)
}

/// `auth.example.com:8443` -> (`auth.example.com`, Some(8443)), by the one
/// `host:port` parser ([`crate::protocol::host_port`]); `None` when `domain` is not
/// a host with an optional port.
pub fn split_domain(domain: &str) -> Option<(&str, Option<u16>)> {
    let hp = host_port::parse("auth domain", domain, Port::Optional).ok()?;
    Some((hp.host(), hp.port()))
}

/// Whether a cache file name `name` (`<app_hostname>-<aud>-token`, with `/` and `*`
/// written as `-`) holds a token of an app that covers `host`, given the token's
/// audiences. Used to answer `tunnel token` and `tunnel logout` from the cache alone.
/// Only exact and wildcard app names are matched: an app with a path cannot be told
/// from a host name with a `-` in it, so those are left to discovery.
pub fn cache_name_covers(name: &str, auds: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    auds.iter().any(|aud| {
        let app = name
            .strip_suffix("-token")
            .and_then(|n| n.strip_suffix(aud.as_str()))
            .and_then(|n| n.strip_suffix('-'))
            .map(str::to_ascii_lowercase);
        app.is_some_and(|app| {
            app == host
                || app
                    .strip_prefix("-.")
                    .is_some_and(|suffix| covers(&format!("*.{suffix}"), &host))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::Audience;

    fn claims(iss: Option<&str>, aud: &str) -> TokenClaims {
        TokenClaims {
            exp: u64::MAX,
            aud: Audience::One(aud.into()),
            email: None,
            iss: iss.map(str::to_string),
        }
    }

    fn meta(auth_domain: &str, app_hostname: &str, aud: &str) -> AppMetadata {
        AppMetadata {
            kind: "match".into(),
            hostname: "x".into(),
            auth_domain: auth_domain.into(),
            aud: aud.into(),
            app_hostname: app_hostname.into(),
            iat: 0,
            transfer_url: None,
        }
    }

    #[test]
    fn patterns_cover_hosts() {
        assert!(covers("db.test", "DB.test"));
        assert!(covers("db.test/path", "db.test"));
        assert!(covers("*.corp.test", "a.corp.test"));
        assert!(covers("*.corp.test", "a.b.corp.test"));
        assert!(!covers("*.corp.test", "corp.test"));
        assert!(!covers("*.corp.test", "evilcorp.test"));
        assert!(!covers("db.test", "evil.test"));
        assert!(!covers("", "evil.test"));
        assert!(!covers("*", "evil.test"));
    }

    #[test]
    fn a_token_fits_only_its_issuer_and_aud() {
        let real = meta("team.example.com", "db.test", "aud1");
        assert!(app_token_fits(
            &claims(Some("https://team.example.com"), "aud1"),
            &real
        ));
        // The harvesting attack: the same app and AUD claimed under another domain.
        let hostile = meta("evil.test", "db.test", "aud1");
        assert!(!app_token_fits(
            &claims(Some("https://team.example.com"), "aud1"),
            &hostile
        ));
        assert!(!app_token_fits(&claims(None, "aud1"), &real));
        assert!(!app_token_fits(
            &claims(Some("https://team.example.com"), "aud2"),
            &real
        ));
        assert!(org_token_fits(
            &claims(Some("https://team.example.com"), "o"),
            "team.example.com"
        ));
        assert!(!org_token_fits(
            &claims(Some("https://evil.test"), "o"),
            "team.example.com"
        ));
    }

    #[test]
    fn the_org_token_goes_only_to_its_auth_domain_over_tls() {
        let ok = |u: &str, plain| {
            org_token_may_go_to(&reqwest::Url::parse(u).unwrap(), "team.example.com", plain)
        };
        assert!(ok(
            "https://team.example.com/cdn-cgi/access/login/db.test?kid=a",
            false
        ));
        assert!(ok(
            "https://TEAM.example.com:443/cdn-cgi/access/login/x",
            false
        ));
        assert!(!ok("http://team.example.com/cdn-cgi/access/login/x", false));
        assert!(ok("http://team.example.com/cdn-cgi/access/login/x", true));
        assert!(!ok("https://evil.test/cdn-cgi/access/login/x", false));
        assert!(!ok(
            "https://team.example.com:8443/cdn-cgi/access/login/x",
            false
        ));
        assert!(!ok("https://team.example.com/other", false));
        assert!(!ok("https://evil.test/x?/cdn-cgi/access/login", false));
        assert!(!ok(
            "https://u@team.example.com/cdn-cgi/access/login/x",
            false
        ));
        let with_port =
            reqwest::Url::parse("http://localhost:7000/cdn-cgi/access/login/x").unwrap();
        assert!(org_token_may_go_to(&with_port, "localhost:7000", true));
        assert!(!org_token_may_go_to(&with_port, "localhost:7001", true));
        let v6 = reqwest::Url::parse("http://[::1]:7000/cdn-cgi/access/login/x").unwrap();
        assert!(org_token_may_go_to(&v6, "[::1]:7000", true));
        // An auth domain that is not host[:port] fits no URL.
        for bad in ["localhost:", "localhost:x", "localhost/x:7000", ""] {
            assert!(!org_token_may_go_to(&with_port, bad, true), "{bad}");
        }
    }

    #[test]
    fn cache_names_are_matched_to_hosts() {
        let auds = ["aud1".to_string()];
        assert!(cache_name_covers("db.test-aud1-token", &auds, "db.test"));
        assert!(!cache_name_covers(
            "db.test-path-aud1-token",
            &auds,
            "db.test"
        ));
        assert!(cache_name_covers(
            "-.corp.test-aud1-token",
            &auds,
            "a.corp.test"
        ));
        assert!(cache_name_covers(
            "-.corp.test-aud1-token",
            &auds,
            "a.b.corp.test"
        ));
        assert!(!cache_name_covers(
            "-.corp.test-aud1-token",
            &auds,
            "corp.test"
        ));
        assert!(!cache_name_covers(
            "db.test-aud1-token",
            &auds,
            "other.test"
        ));
        assert!(!cache_name_covers("db.test-aud2-token", &auds, "db.test"));
        assert!(!cache_name_covers(
            "db.testing-aud1-token",
            &auds,
            "db.test"
        ));
        assert!(!cache_name_covers(
            "auth.test-org-token",
            &auds,
            "auth.test"
        ));
    }
}
