#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::content_range(data));
