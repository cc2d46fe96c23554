#![no_main]
// Body and properties: wrenmq::fuzzing::store (src/store/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| wrenmq::fuzzing::store(data));
