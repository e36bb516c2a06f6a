//! Process exit codes. Few, distinct and documented in the README; `main` maps every
//! error to one of them.

/// Everything worked.
pub const OK: u8 = 0;
/// Unexpected internal failure (a bug: please report it).
pub const INTERNAL: u8 = 1;
/// Bad command line: unknown flag, malformed `--hostname` or `--url`.
pub const USAGE: u8 = 2;
/// Local problem: bad config file, unreadable file, port already in use.
pub const LOCAL: u8 = 3;
/// The app needs a login (or a service token) and none was given.
pub const LOGIN_NEEDED: u8 = 4;
/// Credentials were refused: wrong service token, expired or invalid token.
pub const AUTH_REFUSED: u8 = 5;
/// The edge could not be reached (DNS, connect, timeout, proxy).
pub const NETWORK: u8 = 6;
/// TLS failed: the edge's certificate is not trusted or does not match.
pub const TLS: u8 = 7;
/// The edge could not reach the origin (it answered 502/503/504).
pub const ORIGIN: u8 = 8;
/// The edge refused by policy: unknown app, destination not allowed, other status.
pub const EDGE_REFUSED: u8 = 9;
/// Interrupted by Ctrl-C or SIGTERM before finishing.
pub const INTERRUPTED: u8 = 130;
