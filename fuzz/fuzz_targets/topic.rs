#![no_main]
// Body and properties: wrenmq::fuzzing::topic (src/broker/fuzzing/topic.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| wrenmq::fuzzing::topic(data));
