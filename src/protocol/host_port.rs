//! The one `host:port` parser: every flag (`--url`, `--connect-to`,
//! `--destination`, `--hostname`), every config field (`origin`, `destinations`),
//! the edge's `Host` header and the auth domain go through [`parse`], so they all
//! accept and refuse the same things, with the same error.
//!
//! The rules, decided once:
//! - Whitespace around the value is trimmed (shells and config files carry it);
//!   whitespace inside is refused.
//! - The host is an IP address or a DNS name: labels of letters, digits, `-` and
//!   `_`, each 1 to 63 bytes, at most 253 in all, no empty label (so no trailing
//!   dot). Its case is kept; callers that compare names lower-case them.
//! - An IPv6 address takes brackets when a port follows: `[::1]:22`. Inside
//!   brackets only an IPv6 address is allowed. Where a port is required, a bare
//!   IPv6 address (`::1:22`) is refused as ambiguous; where it is optional, a bare
//!   IPv6 address is a host without a port.
//! - The port is 1 to 65535 in decimal digits; 0 only for an address to listen on
//!   ([`Port::Listen`]: the system picks a free port, as the tests do with
//!   `--url 127.0.0.1:0`). `host:` (an empty port) is refused.
//! - An empty host (`:22`, `[]:22`) is refused.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// Whether a port must follow the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// `host:port`, port 1..=65535: a place to connect to.
    Required,
    /// `host:port`, port 0..=65535: a place to listen on (0 picks a free port).
    Listen,
    /// `host` or `host:port`, port 1..=65535 when given; the caller knows the default.
    Optional,
}

impl Port {
    fn expected(self) -> &'static str {
        match self {
            Port::Required => "host:port, e.g. 10.0.0.5:22 or [::1]:22",
            Port::Listen => "host:port, e.g. 127.0.0.1:5432 or [::1]:5432",
            Port::Optional => "host or host:port, e.g. db.example.com or db.example.com:8443",
        }
    }
}

/// A parsed `host:port`; `host` borrows from the input and never holds brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort<'a> {
    host: &'a str,
    port: Option<u16>,
}

impl<'a> HostPort<'a> {
    /// The host as given (case kept), an IPv6 address without its brackets.
    pub fn host(&self) -> &'a str {
        self.host
    }

    /// The port; always `Some` when parsed with [`Port::Required`] or [`Port::Listen`].
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

/// `host:port` again, with brackets around an IPv6 address; parses back to itself.
impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(self.host)?;
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// A value that is not a usable `host:port`: names where it came from (a flag or a
/// config field), what is wrong, and what would be right, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}; expected {expected}")]
pub struct HostPortError {
    what: String,
    value: String,
    why: &'static str,
    expected: &'static str,
}

impl HostPortError {
    /// An error about `value` (given as `what`) that the parser accepted but the
    /// caller cannot use, e.g. a host name that does not resolve.
    pub fn new(what: &str, value: &str, why: &'static str, port: Port) -> HostPortError {
        HostPortError {
            what: what.to_string(),
            value: value.to_string(),
            why,
            expected: port.expected(),
        }
    }

    /// What is wrong with the value (without the flag, the value or the example).
    pub fn why(&self) -> &'static str {
        self.why
    }
}

/// Parse `value`, named `what` in the error (`--destination`, `apps[0] origin`),
/// by the rules in this module's documentation.
pub fn parse<'a>(what: &str, value: &'a str, port: Port) -> Result<HostPort<'a>, HostPortError> {
    split(value.trim(), port).map_err(|why| HostPortError::new(what, value, why, port))
}

fn split(s: &str, mode: Port) -> Result<HostPort<'_>, &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("a '[' without its ']'")?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err("only an IPv6 address goes in brackets");
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("text after ']' that is not :port")?,
            ),
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                if mode != Port::Optional || s.parse::<Ipv6Addr>().is_err() {
                    return Err("an IPv6 address needs brackets, as in [::1]:22");
                }
                (s, None)
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    if !valid_host(host) {
        return Err("the host is not an IP address or a host name");
    }
    let port = match port {
        Some(p) => Some(parse_port(p, mode)?),
        None if mode == Port::Optional => None,
        None => return Err("the port is missing"),
    };
    Ok(HostPort { host, port })
}

fn parse_port(p: &str, mode: Port) -> Result<u16, &'static str> {
    if p.is_empty() {
        return Err("the port is empty");
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port is not a number");
    }
    match p.parse::<u16>() {
        Ok(0) if mode != Port::Listen => Err("port 0 cannot be connected to"),
        Ok(n) => Ok(n),
        Err(_) => Err("the port is over 65535"),
    }
}

/// An IP address, or a DNS name as this module's documentation describes.
fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: &str, port: Port) -> (String, Option<u16>) {
        let hp = parse("--x", value, port).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        (hp.host().to_string(), hp.port())
    }

    fn why(value: &str, port: Port) -> &'static str {
        match parse("--x", value, port) {
            Ok(hp) => panic!("{value:?} should be refused, got {hp:?}"),
            Err(e) => e.why(),
        }
    }

    #[test]
    fn names_and_ipv4_with_a_port() {
        assert_eq!(
            ok("10.0.0.5:22", Port::Required),
            ("10.0.0.5".into(), Some(22))
        );
        assert_eq!(
            ok("db.internal:5432", Port::Required),
            ("db.internal".into(), Some(5432))
        );
        assert_eq!(
            ok("localhost:65535", Port::Required),
            ("localhost".into(), Some(65535))
        );
        assert_eq!(
            ok("my_host-1.test:1", Port::Required),
            ("my_host-1.test".into(), Some(1))
        );
    }

    #[test]
    fn case_is_kept() {
        assert_eq!(
            ok("DB.Example.TEST:22", Port::Required).0,
            "DB.Example.TEST"
        );
    }

    #[test]
    fn whitespace_around_is_trimmed_inside_is_refused() {
        assert_eq!(
            ok("  db.test:22\t", Port::Required),
            ("db.test".into(), Some(22))
        );
        assert_eq!(
            why("db test:22", Port::Required),
            "the host is not an IP address or a host name"
        );
        assert_eq!(
            why("db.test: 22", Port::Required),
            "the port is not a number"
        );
        assert_eq!(why("   ", Port::Optional), "it is empty");
    }

    #[test]
    fn ipv6_takes_brackets_before_a_port() {
        assert_eq!(ok("[::1]:22", Port::Required), ("::1".into(), Some(22)));
        assert_eq!(
            ok("[fe80::1:2]:7000", Port::Listen),
            ("fe80::1:2".into(), Some(7000))
        );
        for bare in ["::1:22", "fe80::1", "::1"] {
            assert_eq!(
                why(bare, Port::Required),
                "an IPv6 address needs brackets, as in [::1]:22"
            );
            assert_eq!(
                why(bare, Port::Listen),
                "an IPv6 address needs brackets, as in [::1]:22"
            );
        }
        // Without a required port, a bare IPv6 address is a host alone.
        assert_eq!(ok("::1", Port::Optional), ("::1".into(), None));
        assert_eq!(ok("[::1]", Port::Optional), ("::1".into(), None));
        assert_eq!(
            why("a:b:c", Port::Optional),
            "an IPv6 address needs brackets, as in [::1]:22"
        );
    }

    #[test]
    fn only_ipv6_goes_in_brackets() {
        for bad in ["[10.0.0.1]:22", "[db.test]:22", "[]:22", "[zz]:22"] {
            assert_eq!(
                why(bad, Port::Required),
                "only an IPv6 address goes in brackets"
            );
        }
        assert_eq!(why("[::1:22", Port::Required), "a '[' without its ']'");
        assert_eq!(
            why("[::1]22", Port::Required),
            "text after ']' that is not :port"
        );
    }

    #[test]
    fn the_port_rules() {
        assert_eq!(why("db.test", Port::Required), "the port is missing");
        assert_eq!(why("[::1]", Port::Listen), "the port is missing");
        assert_eq!(why("db.test:", Port::Required), "the port is empty");
        assert_eq!(why("db.test:", Port::Optional), "the port is empty");
        assert_eq!(
            why("db.test:http", Port::Required),
            "the port is not a number"
        );
        assert_eq!(
            why("db.test:+22", Port::Required),
            "the port is not a number"
        );
        assert_eq!(
            why("db.test:-1", Port::Required),
            "the port is not a number"
        );
        assert_eq!(
            why("db.test:65536", Port::Required),
            "the port is over 65535"
        );
        assert_eq!(
            why("db.test:99999999999", Port::Listen),
            "the port is over 65535"
        );
        assert_eq!(ok("db.test", Port::Optional), ("db.test".into(), None));
        assert_eq!(
            ok("db.test:8443", Port::Optional),
            ("db.test".into(), Some(8443))
        );
    }

    #[test]
    fn port_zero_only_to_listen_on() {
        assert_eq!(
            ok("127.0.0.1:0", Port::Listen),
            ("127.0.0.1".into(), Some(0))
        );
        assert_eq!(
            ok("localhost:0", Port::Listen),
            ("localhost".into(), Some(0))
        );
        assert_eq!(
            why("127.0.0.1:0", Port::Required),
            "port 0 cannot be connected to"
        );
        assert_eq!(
            why("db.test:0", Port::Optional),
            "port 0 cannot be connected to"
        );
    }

    #[test]
    fn an_empty_host_is_refused() {
        for bad in [":22", ":0", ":"] {
            assert_eq!(why(bad, Port::Listen), "the host is empty");
        }
        assert_eq!(why("", Port::Required), "it is empty");
    }

    #[test]
    fn host_names_are_checked() {
        let long_label = format!("{}.test:22", "a".repeat(64));
        let long_name = format!("{}:22", vec!["a".repeat(63); 5].join("."));
        for bad in [
            "db..test:22",
            "db.test.:22",
            ".db:22",
            "a/b:22",
            "u@db:22",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert_eq!(
                why(bad, Port::Required),
                "the host is not an IP address or a host name",
                "{bad}"
            );
        }
    }

    #[test]
    fn the_error_names_the_flag_the_value_and_an_example() {
        let e = parse("--destination", "10.0.0.5", Port::Required).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --destination \"10.0.0.5\": the port is missing; expected host:port, e.g. 10.0.0.5:22 or [::1]:22"
        );
        let e = parse("--url", "nonsense", Port::Listen).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --url \"nonsense\": the port is missing; expected host:port, e.g. 127.0.0.1:5432 or [::1]:5432"
        );
    }

    #[test]
    fn display_parses_back_to_itself() {
        for (s, mode) in [
            ("[::1]:22", Port::Required),
            ("db.test:22", Port::Required),
            ("::1", Port::Optional),
            ("db.test", Port::Optional),
            ("127.0.0.1:0", Port::Listen),
        ] {
            let hp = parse("--x", s, mode).unwrap();
            let again = hp.to_string();
            assert_eq!(parse("--x", &again, mode).unwrap(), hp, "{s} -> {again}");
        }
        assert_eq!(
            parse("--x", "::1", Port::Optional).unwrap().to_string(),
            "[::1]"
        );
    }
}
