//! The agent's Workload API requests (SPIFFE and lanyard.workload.v1), decoded with
//! prost and converted as the handlers convert them: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lanyard_agent::fuzzing::workload_api_bytes(data);
});
