#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outrigger_fuzz::dead_letter::run(data));
