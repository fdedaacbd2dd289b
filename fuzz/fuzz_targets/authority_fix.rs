//! The `:authority` rewriter sees every byte any local process sends: it must
//! never panic and never change the stream's length.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lanyard_agent::fuzzing::authority_fix_bytes(data);
});
