//! `edge.toml` text, parsed and validated.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel_fuzz::edge_config(data));
