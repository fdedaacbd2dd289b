//! Deny lists, org-signed and chain-signed, on arbitrary bytes: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lanyard_token::fuzzing::deny_list_bytes(data);
});
