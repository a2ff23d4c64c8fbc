#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outrigger_fuzz::coordinates::run(data));
