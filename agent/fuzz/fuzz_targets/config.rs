//! The agent's config parser: any text gives a config or a ConfigError, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lanyard_agent::config::Config::parse(text, std::path::Path::new("/etc/lanyard"), |_| None);
    }
});
