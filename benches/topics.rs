//! Topic matching: `protocol::topic::matches` on typical filter/topic pairs, and
//! `broker::SubscriptionTable::collect_matches` for one publish with 10 / 1,000 / 100,000
//! exact filters plus 1,000 wildcard filters in the table (the `subscale` scenario of
//! `wrenmq-bench`, without the sockets).
//!
//! `cargo bench --bench topics`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wrenmq::broker::{Subscriber, SubscriptionTable};
use wrenmq::protocol::topic::matches;
use wrenmq::protocol::SubscriptionOptions;

fn matcher(c: &mut Criterion) {
    let pairs = [
        (
            "exact_hit",
            "sensors/gateway-7/temperature",
            "sensors/gateway-7/temperature",
        ),
        (
            "exact_miss",
            "sensors/gateway-7/humidity",
            "sensors/gateway-7/temperature",
        ),
        (
            "plus",
            "sensors/+/temperature",
            "sensors/gateway-7/temperature",
        ),
        ("hash", "sensors/#", "sensors/gateway-7/temperature"),
        ("plus_miss_last", "bench/w/17/+", "bench/target"),
    ];
    let mut g = c.benchmark_group("topic_matches");
    for (name, filter, topic) in pairs {
        g.bench_function(name, |b| {
            b.iter(|| matches(black_box(filter), black_box(topic)))
        });
    }
    g.finish();
}

fn table(c: &mut Criterion) {
    let mut g = c.benchmark_group("collect_matches");
    for exact in [10usize, 1_000, 100_000] {
        let mut t = SubscriptionTable::default();
        let opts = SubscriptionOptions::default();
        for k in 0..exact {
            t.subscribe(&format!("bench/x/{k}"), k % 10, opts, 0);
        }
        for k in 0..1000 {
            t.subscribe(&format!("bench/w/{k}/+"), k % 10, opts, 0);
        }
        t.subscribe("bench/target", 10, opts, 0);
        let mut out: Vec<Subscriber> = Vec::new();
        g.bench_with_input(
            BenchmarkId::new("exact_plus_1000_wildcards", exact),
            &t,
            |b, t| {
                b.iter(|| {
                    out.clear();
                    t.collect_matches(black_box("bench/target"), &mut out);
                    out.len()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, matcher, table);
criterion_main!(benches);
