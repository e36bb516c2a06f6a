//! A WebSocket byte stream, through the bridge's sans-IO frame decoder alone.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel_fuzz::frame_decoder(data));
