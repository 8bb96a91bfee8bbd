//! `scripts/fuzz` runs this target; see ferrosock_proto::fuzz::inflater for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrosock_proto::fuzz::inflater(data));
