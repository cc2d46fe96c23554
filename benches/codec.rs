//! Codec throughput: decode and encode of PUBLISH (16 B, 256 B, 4 KiB payloads), CONNECT
//! and SUBSCRIBE, reported in bytes per second of wire format.
//!
//! `cargo bench --bench codec`

use std::hint::black_box;
use std::num::NonZeroU16;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wrenmq::protocol::{
    decode, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Status, Subscribe,
    SubscriptionOptions,
};

const V: ProtocolVersion = ProtocolVersion::V311;
const MAX: u32 = 2_000_000;

fn cases(payloads: &[Vec<u8>]) -> Vec<(String, Packet<'_>)> {
    let mut out = Vec::new();
    for p in payloads {
        out.push((
            format!("publish_qos1_{}B", p.len()),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "sensors/gateway-7/temperature",
                packet_id: NonZeroU16::new(42),
                properties: Properties::EMPTY,
                payload: p,
            }),
        ));
    }
    out.push((
        "connect".to_string(),
        Packet::Connect(Connect {
            version: V,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::EMPTY,
            client_id: "gateway-7-sensor-bridge",
            will: None,
            username: Some("bridge"),
            password: Some(b"correct horse battery staple"),
            bridge: false,
        }),
    ));
    let opts = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    out.push((
        "subscribe_5".to_string(),
        Packet::Subscribe(Subscribe {
            packet_id: NonZeroU16::MIN,
            properties: Properties::EMPTY,
            filters: vec![
                ("sensors/+/temperature", opts),
                ("sensors/+/humidity", opts),
                ("actuators/gateway-7/#", opts),
                ("$SYS/broker/uptime", opts),
                ("config/gateway-7", opts),
            ],
        }),
    ));
    out
}

fn codec(c: &mut Criterion) {
    let payloads: Vec<Vec<u8>> = [16, 256, 4096].iter().map(|&n| vec![0xA5; n]).collect();
    for (name, packet) in cases(&payloads) {
        let mut wire = Vec::new();
        packet.encode(V, &mut wire);
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function("decode", |b| {
            b.iter(|| match decode(black_box(&wire), Some(V), MAX) {
                Ok(Status::Complete((p, n))) => {
                    black_box(&p);
                    n
                }
                other => panic!("decode failed: {other:?}"),
            })
        });
        let mut out = Vec::with_capacity(wire.len());
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                black_box(&packet).encode(V, &mut out);
                black_box(out.len())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
