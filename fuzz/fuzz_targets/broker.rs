#![no_main]
// Body and properties: wrenmq::fuzzing::broker (src/broker/fuzzing/).
libfuzzer_sys::fuzz_target!(|data: &[u8]| wrenmq::fuzzing::broker(data));
