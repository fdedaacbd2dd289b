//! Selector and entry-template parsing (validate, render, matches): must never
//! panic, and whatever a template renders it must match.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lanyard_plugins::fuzzing::selector_template_bytes(data);
});
