//! End-to-end tests: one test binary (as ripgrep does), one module per area. Every
//! test drives the real `tunnel` binary over real sockets on loopback.
//!
//! They run on a Unix host (they drive sshd, PostgreSQL, `kill` and Python hooks);
//! the Windows build is proven from Linux by the `windows` module, under Wine.
#![cfg(unix)]

mod support;

mod bad_input;
mod browser_login;
mod commands;
mod data_path;
mod doctor;
mod edge_logs;
mod edge_security;
mod examples;
mod handshake;
mod layers;
mod login;
mod metrics;
mod postgres;
mod proxy;
mod resilience;
mod resume;
mod security;
mod ssh;
mod status;
mod up;
mod windows;
