//! The start of a WebSocket frame, through the frame header parser alone.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel_fuzz::frame_header(data));
