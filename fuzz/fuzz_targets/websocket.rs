#![no_main]
// Body and properties: wrenmq::fuzzing::websocket (src/net/websocket/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| wrenmq::fuzzing::websocket(data));
