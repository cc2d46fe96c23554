//! Topic names and topic filters: what is valid (§4.7) and what matches what.
//!
//! `matches` is the single definition of matching; the broker's subscription table uses it
//! for wildcard filters and tests use it as the oracle for faster lookups.

/// A topic name a client may publish to: at least one character, no wildcard [MQTT-4.7.3-1]
/// [MQTT-3.3.2-2]. Length and UTF-8 rules are checked where the string is decoded.
pub fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// A topic filter: non-empty [MQTT-4.7.3-1]; `#` only as the whole last level
/// [MQTT-4.7.1-2]; `+` only as a whole level [MQTT-4.7.1-3].
pub fn is_valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether a filter contains a wildcard (and so cannot be looked up by exact name).
pub fn has_wildcards(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// Does `filter` match `topic`? Both must be valid. Topics starting with `$` are not matched
/// by filters starting with a wildcard [MQTT-4.7.2-1]; `a/#` matches `a` [MQTT-4.7.1-2].
///
/// One pass over the bytes of both, level by level, with no iterator or `memcmp` call per
/// level: the broker runs this once per wildcard filter per publish, so it is on the hot
/// path (a split-based version spent most of its time in `memcmp` calls on short levels).
/// `tests::matches_naive` is the readable definition it is checked against.
pub fn matches(filter: &str, topic: &str) -> bool {
    let f = filter.as_bytes();
    let t = topic.as_bytes();
    if t.first() == Some(&b'$') && matches!(f.first(), Some(b'+' | b'#')) {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    loop {
        // `i` and `j` are at the start of a level of the filter and of the topic.
        match f.get(i) {
            Some(b'#') => return true, // valid filters have `#` only as the whole last level
            Some(b'+') => {
                while j < t.len() && t[j] != b'/' {
                    j += 1;
                }
                i += 1;
            }
            _ => {
                while i < f.len() && f[i] != b'/' {
                    if j >= t.len() || t[j] != f[i] {
                        return false;
                    }
                    i += 1;
                    j += 1;
                }
                if j < t.len() && t[j] != b'/' {
                    return false; // the topic level is longer
                }
            }
        }
        // Both are at the end of a level: at a `/` or at the end of the string.
        match (i < f.len(), j < t.len()) {
            (false, false) => return true,
            (true, true) => {
                i += 1;
                j += 1;
            }
            // The topic ended first: only a final `/#` still matches (`a/#` matches `a`).
            (true, false) => return &f[i..] == b"/#",
            (false, true) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition by levels, as the spec words it; the oracle for `matches`.
    fn matches_naive(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let mut f = filter.split('/');
        let mut t = topic.split('/');
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(fl), Some(tl)) if fl == tl => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// Every valid filter and topic up to 4 characters over a small alphabet.
    #[test]
    fn matches_agrees_with_the_naive_definition() {
        fn strings(alphabet: &[u8], max: usize) -> Vec<String> {
            let mut all = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                let next: Vec<String> = last
                    .iter()
                    .flat_map(|s| alphabet.iter().map(move |&c| format!("{s}{}", c as char)))
                    .collect();
                all.extend(next.iter().cloned());
                last = next;
            }
            all
        }
        let filters: Vec<String> = strings(b"ab/+#$", 4)
            .into_iter()
            .filter(|f| is_valid_topic_filter(f))
            .collect();
        let topics: Vec<String> = strings(b"ab/$", 4)
            .into_iter()
            .filter(|t| is_valid_topic_name(t))
            .collect();
        let mut checked = 0;
        for f in &filters {
            for t in &topics {
                assert_eq!(matches(f, t), matches_naive(f, t), "{f} vs {t}");
                checked += 1;
            }
        }
        assert!(checked > 100_000);
    }

    #[test]
    fn filter_validity() {
        for ok in [
            "#", "+", "a/#", "a/+/b", "+/+", "/", "a//b", "+/", "/#", "$SYS/#",
        ] {
            assert!(is_valid_topic_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "#/a", "a+", "a/b+/c", "++", "##"] {
            assert!(!is_valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn topic_name_validity() {
        assert!(is_valid_topic_name("a/b"));
        assert!(is_valid_topic_name("/"));
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name("a/+"));
        assert!(!is_valid_topic_name("a/#"));
    }

    #[test]
    fn matching_rules() {
        let cases = [
            ("sport/#", "sport", true), // [MQTT-4.7.1-2]
            ("sport/#", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "a/b/c", true),
            ("#", "$SYS/broker", false), // [MQTT-4.7.2-1]
            ("+/broker", "$SYS/broker", false),
            ("$SYS/#", "$SYS/broker", true),
            ("$SYS/+", "$SYS/broker", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/", false),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "{f} vs {t}");
        }
    }
}
