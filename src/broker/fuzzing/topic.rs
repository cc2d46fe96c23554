//! The `topic` fuzz harness (entry `crate::fuzzing::topic`): `protocol::topic::matches`
//! and [`SubscriptionTable::collect_matches`] agree with the naive level-by-level matcher
//! [`naive_matches`], which the `broker` harness uses as its oracle too.

use std::collections::BTreeSet;

use crate::broker::SubscriptionTable;
use crate::protocol::topic::{is_valid_topic_filter, is_valid_topic_name, matches};
use crate::protocol::SubscriptionOptions;

/// The oracle: level-by-level matching straight from §4.7, recursive and obviously right.
pub fn naive_matches(filter: &str, topic: &str) -> bool {
    fn go(f: &[&str], t: &[&str]) -> bool {
        match (f.split_first(), t.split_first()) {
            (None, None) => true,
            // `#` matches the parent level too: `a/#` matches `a` [MQTT-4.7.1-2].
            (Some((&"#", _)), _) => true,
            (Some((&"+", fr)), Some((_, tr))) => go(fr, tr),
            (Some((fl, fr)), Some((tl, tr))) => fl == tl && go(fr, tr),
            _ => false,
        }
    }
    // [MQTT-4.7.2-1] `$` topics are not matched by a filter starting with a wildcard.
    if topic.starts_with('$') && (filter.starts_with('#') || filter.starts_with('+')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    go(&f, &t)
}

/// Maps fuzzer bytes to a small alphabet so that topics and filters collide often; the
/// alphabet's own characters map to themselves so that seeds stay readable.
fn topic_text(bytes: &[u8]) -> String {
    const ALPHABET: [char; 8] = ['a', 'b', '/', '/', '+', '#', '$', 'c'];
    bytes
        .iter()
        .map(|&b| match b {
            b'a' | b'b' | b'c' | b'/' | b'+' | b'#' | b'$' => char::from(b),
            _ => ALPHABET[usize::from(b) % ALPHABET.len()],
        })
        .collect()
}

/// Target `topic`: the bytes are `0xFF`-separated strings. Each valid filter is subscribed
/// by a session (sessions reused every 3 filters), some are unsubscribed again, and every
/// valid topic is matched through both `matches` and the table, against the oracle.
pub fn topic(data: &[u8]) {
    // At most 48 words: the pairwise check is quadratic.
    let words: Vec<String> = data
        .split(|&b| b == 0xFF)
        .take(48)
        .map(topic_text)
        .collect();
    let mut table = SubscriptionTable::default();
    // (filter, session) pairs the table should hold.
    let mut subs: BTreeSet<(String, usize)> = BTreeSet::new();
    for (i, w) in words.iter().enumerate() {
        let session = i % 3;
        if is_valid_topic_filter(w) {
            if i % 5 == 4 && subs.contains(&(w.clone(), session)) {
                assert!(table.unsubscribe(w, session), "unsubscribe {w} lost");
                subs.remove(&(w.clone(), session));
            } else {
                let key = table.subscribe(w, session, SubscriptionOptions::default(), 0);
                assert_eq!(&*key, w.as_str());
                subs.insert((w.clone(), session));
            }
            assert_eq!(table.len(), subs.len());
        }
        for f in &words {
            if is_valid_topic_filter(f) && is_valid_topic_name(w) {
                assert_eq!(
                    matches(f, w),
                    naive_matches(f, w),
                    "filter {f:?} topic {w:?}"
                );
            }
        }
    }
    for t in words.iter().filter(|t| is_valid_topic_name(t)) {
        let mut got = Vec::new();
        table.collect_matches(t, &mut got);
        let mut got: Vec<usize> = got.iter().map(|s| s.session).collect();
        got.sort_unstable();
        let mut want: Vec<usize> = subs
            .iter()
            .filter(|(f, _)| naive_matches(f, t))
            .map(|&(_, s)| s)
            .collect();
        want.sort_unstable();
        assert_eq!(got, want, "collect_matches({t:?}) with {subs:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_matcher_spot_checks() {
        assert!(naive_matches("a/#", "a"));
        assert!(naive_matches("+/+", "/x"));
        assert!(!naive_matches("+", "$SYS"));
        assert!(!naive_matches("a/+", "a/b/c"));
        assert!(naive_matches("$SYS/#", "$SYS/x"));
    }
}
