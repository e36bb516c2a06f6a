//! Bytes a WebSocket peer sends, through the bridge as edge and as client.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel_fuzz::frame(data));
