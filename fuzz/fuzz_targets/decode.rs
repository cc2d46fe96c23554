#![no_main]
// Body and properties: wrenmq::fuzzing::decode (src/protocol/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| wrenmq::fuzzing::decode(data));
