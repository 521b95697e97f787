#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| costream::fuzzing::rtmp_session(data));
