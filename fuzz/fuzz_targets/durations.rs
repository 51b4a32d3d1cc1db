#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| elasticd_fuzz::durations(data));
