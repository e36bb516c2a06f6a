//! A presented token, through the JWT header parser and the issuer's checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel_fuzz::jwt(data));
