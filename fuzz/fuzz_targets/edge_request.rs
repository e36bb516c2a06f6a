//! An HTTP/1.1 request head, as the edge checks a handshake.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel_fuzz::edge_request(data));
