//! An HTTP/1.1 response head, as the client explains a refused handshake.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel_fuzz::client_response(data));
