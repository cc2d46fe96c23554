//! Retained messages: the last retained message per topic (§3.3.1.3).

use std::collections::HashMap;
use std::sync::Arc;

use super::message::Message;
use crate::protocol::topic;

#[derive(Debug, Default)]
pub struct RetainedStore {
    by_topic: HashMap<Box<str>, Arc<Message>>,
}

impl RetainedStore {
    /// Stores `msg` as the retained message of its topic, replacing the previous one
    /// [MQTT-3.3.1-5]; an empty payload removes it instead [MQTT-3.3.1-10/11].
    pub fn store(&mut self, msg: &Arc<Message>) {
        if msg.payload.is_empty() {
            self.by_topic.remove(&*msg.topic);
        } else {
            self.by_topic.insert(msg.topic.clone(), msg.clone());
        }
    }

    /// Removes `topic`'s retained message.
    pub fn remove(&mut self, topic: &str) {
        self.by_topic.remove(topic);
    }

    /// Every retained message.
    pub fn messages(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.by_topic.values()
    }

    /// Calls `f` for every retained message whose topic matches `filter`.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&Arc<Message>)) {
        if !topic::has_wildcards(filter) {
            if let Some(m) = self.by_topic.get(filter) {
                f(m);
            }
            return;
        }
        for m in self.by_topic.values() {
            if topic::matches(filter, &m.topic) {
                f(m);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_topic.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn msg(t: &str, p: &[u8]) -> Arc<Message> {
        Message::new(t, p, QoS::AtMostOnce, true)
    }

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut v = Vec::new();
        store.for_each_match(filter, |m| v.push(m.topic.to_string()));
        v.sort();
        v
    }

    #[test]
    fn replace_clear_and_match() {
        let mut s = RetainedStore::default();
        s.store(&msg("a/b", b"1"));
        s.store(&msg("a/b", b"2"));
        s.store(&msg("a/c", b"3"));
        s.store(&msg("$SYS/x", b"4"));
        assert_eq!(s.len(), 3);
        let mut got = Vec::new();
        s.for_each_match("a/b", |m| got.push(m.payload.to_vec()));
        assert_eq!(got, vec![b"2".to_vec()]);
        assert_eq!(topics(&s, "a/+"), ["a/b", "a/c"]);
        assert_eq!(topics(&s, "#"), ["a/b", "a/c"]); // [MQTT-4.7.2-1]
        assert_eq!(topics(&s, "$SYS/#"), ["$SYS/x"]);
        s.store(&msg("a/b", b""));
        assert_eq!(topics(&s, "a/#"), ["a/c"]);
    }
}
