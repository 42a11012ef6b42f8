#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth::fuzzing::tar_overlay(data));
