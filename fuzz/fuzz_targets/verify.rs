//! Token parsing and verification on arbitrary bytes: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lanyard_token::fuzzing::verify_bytes(data);
});
