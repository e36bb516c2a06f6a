//! `--hostname`, `--destination` and `-H` values.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tunnel::fuzzing::hostname(data));
