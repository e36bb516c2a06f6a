//! End-to-end tests: one test binary (as ripgrep does), one module per area. Every
//! test drives the real `tunnel` binary over real sockets on loopback.

mod support;

mod bad_input;
mod browser_login;
mod commands;
mod data_path;
mod edge_security;
mod fuzz_seeds;
mod handshake;
mod login;
mod postgres;
mod ssh;
