//! The issuer's lanyard.issuer.v1.Node requests, decoded with prost and converted as
//! the handlers convert them: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lanyard_issuer::fuzzing::node_request_bytes(data);
});
