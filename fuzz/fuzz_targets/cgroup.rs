//! `/proc/PID/cgroup` and `mountinfo` parsing: must never panic, and a container
//! id it reports is always 64 lowercase hex.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lanyard_plugins::fuzzing::cgroup_bytes(data);
});
