//! `scripts/fuzz` runs this target; see ferrosock::fuzz::negotiation for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrosock::fuzz::negotiation(data));
