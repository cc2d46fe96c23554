#![no_main]
// Body and properties: wrenmq::fuzzing::split (src/net/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| wrenmq::fuzzing::split(data));
