#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| costream::fuzzing::flv_gop(data));
