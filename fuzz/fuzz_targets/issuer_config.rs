//! The issuer's config parser: any text gives a config or a ConfigError, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lanyard_issuer::fuzzing::config_bytes(data);
});
