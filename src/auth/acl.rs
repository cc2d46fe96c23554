//! Mosquitto ACL files and the access check.
//!
//! Format (mosquitto.conf(5), `acl_file`):
//! - `topic [read|write|readwrite|deny] <filter>`; without an access word the rule is
//!   readwrite. The filter is the rest of the line (it may contain spaces).
//! - `user <name>`: the `topic` lines below it apply to that user name (not client id).
//!   `topic` lines before any `user` line apply to anonymous clients.
//! - `pattern [read|write|readwrite|deny] <filter>`: applies to every client, wherever it
//!   stands; every `%c` / `%u` becomes the client id / user name, inside a level too
//!   (`dev-%c/#`), as in Mosquitto 2.0. A pattern with `%u` never applies to a client
//!   without user name, and a client whose id or user name contains `+` or `#` gets no
//!   pattern access at all (it would turn the pattern into a wildcard). A `/` in an id or
//!   user name is substituted as it is, as Mosquitto 2.0 does (checked against 2.0.11):
//!   give clients ids without `/` if patterns must keep them apart.
//! - `#` at the start of a line is a comment.
//!
//! Check, as Mosquitto 2.0 does it: the client's own rules (its user's, or the anonymous
//! ones), deny rules first, then the patterns, deny first. The first matching rule that
//! denies or grants decides; nothing matching means denied. A rule whose filter does not
//! start with `$` never matches a `$` topic.
//!
//! Subscriptions: Mosquitto 2.0 accepts every SUBSCRIBE and checks read access per
//! delivered message. wrenmq checks each delivered message the same way, and in addition
//! refuses (SUBACK 0x80) a filter that no read rule overlaps or that a deny rule covers
//! entirely, since such a subscription could never deliver anything. A shared
//! subscription `$share/<group>/<filter>` is checked by its filter part, as Mosquitto
//! does: the messages it delivers are those of the filter [MQTT-4.8.2].

use std::collections::HashMap;

use crate::protocol::topic;

/// Read access (bit).
pub const READ: u8 = 1;
/// Write access (bit).
pub const WRITE: u8 = 2;
const DENY: u8 = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    /// READ | WRITE bits; 0 = deny.
    access: u8,
    filter: Box<str>,
}

/// A parsed ACL file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// A line that cannot be used; the caller adds the file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Who is asking.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

impl Acl {
    pub fn parse(text: &str) -> Result<Acl, LineError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches(['\r', '\n']).trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| LineError {
                line: i + 1,
                message,
            };
            let (keyword, rest) = match line.split_once(' ') {
                Some((k, r)) => (k, r.trim_start_matches(' ')),
                None => (line, ""),
            };
            match keyword {
                "topic" | "pattern" => {
                    let (access, filter) = parse_rule(rest).map_err(err)?;
                    let rule = Rule {
                        access,
                        filter: filter.into(),
                    };
                    let list = if keyword == "pattern" {
                        &mut acl.patterns
                    } else {
                        match &user {
                            Some(u) => acl.users.entry(u.clone()).or_default(),
                            None => &mut acl.anonymous,
                        }
                    };
                    list.push(rule);
                }
                "user" => {
                    let name = rest.trim_end();
                    if name.is_empty() {
                        return Err(err("user: missing user name".to_string()));
                    }
                    user = Some(name.to_string());
                }
                other => {
                    return Err(err(format!(
                        "unknown keyword '{other}' (expected topic, pattern or user)"
                    )))
                }
            }
        }
        // Deny rules are evaluated before the grants of the same list (stable: grants
        // keep their file order).
        let deny_first = |l: &mut Vec<Rule>| l.sort_by_key(|r| r.access != DENY);
        deny_first(&mut acl.anonymous);
        acl.users.values_mut().for_each(deny_first);
        deny_first(&mut acl.patterns);
        Ok(acl)
    }

    /// Whether `client` may read (`READ`) or write (`WRITE`) `topic_name`.
    pub fn check(&self, client: Client<'_>, topic_name: &str, access: u8) -> bool {
        self.decide(
            client,
            |filter| topic_allows(filter, topic_name),
            |_| true,
            access,
        )
    }

    /// Whether `client` may subscribe to `filter`: some read rule overlaps it and no deny
    /// rule covers all of it (see the module docs).
    pub fn check_subscribe(&self, client: Client<'_>, filter: &str) -> bool {
        let filter = match filter
            .strip_prefix("$share/")
            .and_then(|r| r.split_once('/'))
        {
            Some((_group, filter)) => filter,
            None => filter,
        };
        self.decide(
            client,
            |rule| filters_overlap(rule, filter),
            |rule| filter_covers(rule, filter),
            READ,
        )
    }

    /// Walks the client's rules then the patterns. `matches` says whether a rule concerns
    /// the request; `deny_applies` whether a matching deny rule decides it.
    fn decide(
        &self,
        client: Client<'_>,
        matches: impl Fn(&str) -> bool,
        deny_applies: impl Fn(&str) -> bool,
        access: u8,
    ) -> bool {
        let own = match client.username {
            Some(u) => self.users.get(u).map_or(&[][..], Vec::as_slice),
            None => &self.anonymous,
        };
        for rule in own {
            if let Some(decision) = apply(rule, &rule.filter, &matches, &deny_applies, access) {
                return decision;
            }
        }
        if self.patterns.is_empty() {
            return false;
        }
        let dangerous = |s: &str| s.contains(['+', '#']);
        if client.username.is_some_and(dangerous) || dangerous(client.client_id) {
            return false;
        }
        let mut expanded = String::new();
        for rule in &self.patterns {
            if !substitute(&rule.filter, client, &mut expanded) {
                continue;
            }
            if let Some(decision) = apply(rule, &expanded, &matches, &deny_applies, access) {
                return decision;
            }
        }
        false
    }
}

fn apply(
    rule: &Rule,
    filter: &str,
    matches: &impl Fn(&str) -> bool,
    deny_applies: &impl Fn(&str) -> bool,
    access: u8,
) -> Option<bool> {
    if !matches(filter) {
        return None;
    }
    if rule.access == DENY {
        return deny_applies(filter).then_some(false);
    }
    (rule.access & access != 0).then_some(true)
}

/// `[access] filter` after `topic`/`pattern`.
fn parse_rule(rest: &str) -> Result<(u8, &str), String> {
    let rest = rest.trim_end();
    if rest.is_empty() {
        return Err("empty topic".to_string());
    }
    let (access, filter) = match rest.split_once(' ') {
        None => (READ | WRITE, rest),
        Some((word, filter)) => {
            let access = match word {
                "read" => READ,
                "write" => WRITE,
                "readwrite" => READ | WRITE,
                "deny" => DENY,
                other => return Err(format!("invalid access type '{other}'")),
            };
            (access, filter.trim_start_matches(' '))
        }
    };
    if !topic::is_valid_topic_filter(filter) {
        return Err(format!("invalid topic filter '{filter}'"));
    }
    Ok((access, filter))
}

/// Expands every `%c`/`%u` into `out`; false when the pattern needs a user name the
/// client does not have.
fn substitute(pattern: &str, client: Client<'_>, out: &mut String) -> bool {
    out.clear();
    let mut rest = pattern;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('c') {
            out.push_str(client.client_id);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('u') {
            match client.username {
                Some(u) => out.push_str(u),
                None => return false,
            }
            rest = tail;
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    true
}

/// Whether a rule's filter grants `topic_name`, with the `$` rule.
fn topic_allows(filter: &str, topic_name: &str) -> bool {
    if topic_name.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    topic::matches(filter, topic_name)
}

fn is_wild(level: &str) -> bool {
    level == "+" || level == "#"
}

/// Whether some topic matches both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let (mut ai, mut bi) = (a.split('/'), b.split('/'));
    let mut first = true;
    loop {
        match (ai.next(), bi.next()) {
            (Some(x), Some(y)) if first && (x.starts_with('$') && is_wild(y)) => return false,
            (Some(x), Some(y)) if first && (y.starts_with('$') && is_wild(x)) => return false,
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
        first = false;
    }
}

/// Whether every topic matching `inner` also matches `outer`.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    let (mut oi, mut ii) = (outer.split('/'), inner.split('/'));
    let mut first = true;
    loop {
        match (oi.next(), ii.next()) {
            // A leading wildcard does not reach `$` topics.
            (Some(o), Some(i)) if first && is_wild(o) && i.starts_with('$') => return false,
            (Some("#"), _) => return true,
            (Some("+"), Some(i)) if i != "#" => {}
            (Some(o), Some(i)) if o == i && !is_wild(i) => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous clients
topic read public/#
topic deny public/secret

user alice
topic sensors/#
topic deny sensors/private/#
topic write cmd/alice

user bob
topic read sensors/+/temp
topic read $SYS/#

# patterns apply to everyone, even though they come after user lines
pattern readwrite clients/%c/#
pattern write users/%u/out
";

    fn acl() -> Acl {
        Acl::parse(FILE).unwrap()
    }

    fn who<'a>(user: Option<&'a str>, id: &'a str) -> Client<'a> {
        Client {
            username: user,
            client_id: id,
        }
    }

    #[test]
    fn access_matrix() {
        let a = acl();
        let anon = who(None, "c1");
        let alice = who(Some("alice"), "c2");
        let bob = who(Some("bob"), "c3");
        let eve = who(Some("eve"), "c4");
        #[rustfmt::skip]
        let cases: &[(Client<'_>, &str, u8, bool)] = &[
            (anon, "public/news", READ, true),
            (anon, "public/news", WRITE, false),
            (anon, "public/secret", READ, false),      // deny before the broader grant
            (anon, "sensors/a", READ, false),          // alice's rules are not anonymous'
            (alice, "sensors/a/temp", READ, true),     // `topic x` alone is readwrite
            (alice, "sensors/a/temp", WRITE, true),
            (alice, "sensors/private/x", READ, false), // deny listed after, evaluated first
            (alice, "cmd/alice", WRITE, true),
            (alice, "cmd/alice", READ, false),
            (alice, "public/news", READ, false),       // anonymous rules are not alice's
            (bob, "sensors/a/temp", READ, true),
            (bob, "sensors/a/temp", WRITE, false),
            (bob, "sensors/a/hum", READ, false),
            (bob, "$SYS/broker/uptime", READ, true),
            (eve, "sensors/a/temp", READ, false),      // unknown user: patterns only
            (eve, "clients/c4/x", READ, true),         // %c
            (eve, "clients/c4/x", WRITE, true),
            (eve, "clients/c3/x", READ, false),
            (eve, "users/eve/out", WRITE, true),       // %u
            (eve, "users/eve/out", READ, false),
            (anon, "clients/c1/a", WRITE, true),       // %c applies to anonymous clients
            (anon, "users//out", WRITE, false),        // %u never does
        ];
        for &(client, t, access, want) in cases {
            assert_eq!(a.check(client, t, access), want, "{client:?} {t} {access}");
        }
    }

    #[test]
    fn dollar_topics_need_dollar_rules() {
        let a = Acl::parse("topic #\ntopic read +/x\n").unwrap();
        let c = who(None, "c");
        assert!(a.check(c, "a/b", READ));
        assert!(!a.check(c, "$SYS/x", READ));
        assert!(!a.check(c, "$x/x", READ));
    }

    #[test]
    fn dangerous_ids_get_no_pattern_access() {
        let a = acl();
        assert!(!a.check(who(Some("e+"), "c"), "clients/c/x", READ));
        assert!(!a.check(who(None, "#"), "clients/#", READ));
        assert!(!a.check(who(None, "a+b"), "clients/a+b/x", READ));
    }

    /// Mosquitto 2.0 substitutes `%c`/`%u` anywhere in a pattern, and only ids and user
    /// names with `+` or `#` lose pattern access (checked against 2.0.11).
    #[test]
    fn patterns_substitute_as_mosquitto_does() {
        let a = Acl::parse("pattern read dev-%c/#\npattern read u/%u/%c\npattern read a/%u%c/x\n")
            .unwrap();
        assert!(a.check(who(None, "7"), "dev-7/t", READ));
        assert!(!a.check(who(None, "7"), "dev-8/t", READ));
        assert!(a.check(who(Some("bob"), "c1"), "u/bob/c1", READ));
        assert!(a.check(who(Some("bob"), "c1"), "a/bobc1/x", READ));
        assert!(!a.check(who(None, "c1"), "u//c1", READ));
        // A `/` in the id is substituted as it is.
        assert!(a.check(who(None, "a/b"), "dev-a/b/t", READ));
        // A lone `%` is literal.
        let a = Acl::parse("pattern read p/%x/%c\n").unwrap();
        assert!(a.check(who(None, "c"), "p/%x/c", READ));
    }

    /// `$share/<group>/<filter>` is checked by its filter part (Mosquitto 2.0); before,
    /// every shared subscription was refused once an ACL existed.
    #[test]
    fn shared_subscriptions_are_checked_by_their_filter() {
        let a = acl();
        let alice = who(Some("alice"), "c2");
        assert!(a.check_subscribe(alice, "$share/g/sensors/#"));
        assert!(a.check_subscribe(alice, "$share/g/sensors/a/temp"));
        assert!(!a.check_subscribe(alice, "$share/g/sensors/private/#"));
        assert!(!a.check_subscribe(alice, "$share/g/other/#"));
        assert!(a.check_subscribe(who(None, "c9"), "$share/grp/clients/c9/#"));
    }

    #[test]
    fn pattern_deny_is_evaluated_before_pattern_grants() {
        let a = Acl::parse("pattern readwrite %c/#\npattern deny %c/admin\n").unwrap();
        let c = who(None, "dev1");
        assert!(a.check(c, "dev1/data", WRITE));
        assert!(!a.check(c, "dev1/admin", WRITE));
    }

    #[test]
    fn empty_acl_denies_everything() {
        let a = Acl::parse("# nothing\n").unwrap();
        assert!(!a.check(who(None, "c"), "a", READ));
        assert!(!a.check(who(Some("u"), "c"), "a", WRITE));
    }

    #[test]
    fn subscribe_checks_overlap_and_cover() {
        let a = acl();
        let alice = who(Some("alice"), "c2");
        let bob = who(Some("bob"), "c3");
        assert!(a.check_subscribe(alice, "sensors/#"));
        assert!(a.check_subscribe(alice, "#")); // gets sensors/..., filtered per message
        assert!(!a.check_subscribe(alice, "sensors/private/#")); // all of it denied
        assert!(!a.check_subscribe(alice, "cmd/alice")); // write only
        assert!(a.check_subscribe(bob, "sensors/+/+"));
        assert!(!a.check_subscribe(bob, "other/#"));
        assert!(a.check_subscribe(bob, "$SYS/broker/#"));
        assert!(
            !a.check_subscribe(who(None, "c"), "#") || a.check(who(None, "c"), "public/x", READ)
        );
        assert!(a.check_subscribe(who(None, "c9"), "clients/c9/#"));
    }

    #[test]
    fn overlap_and_cover() {
        assert!(filters_overlap("a/+", "+/b"));
        assert!(filters_overlap("a/#", "a"));
        assert!(filters_overlap("#", "a/b/c"));
        assert!(!filters_overlap("a/b", "a/c"));
        assert!(!filters_overlap("a/b", "a/b/c"));
        assert!(!filters_overlap("#", "$SYS/#"));
        assert!(!filters_overlap("+/x", "$SYS/x"));
        assert!(filters_overlap("$SYS/#", "$SYS/+"));
        assert!(filter_covers("a/#", "a/+/c"));
        assert!(filter_covers("a/#", "a"));
        assert!(filter_covers("a/+", "a/b"));
        assert!(filter_covers("a/+", "a/+"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(!filter_covers("#", "$SYS/x"));
        assert!(filter_covers("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = Acl::parse("topic read a\ntopic writ b\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.message, "invalid access type 'writ'");
        assert_eq!(Acl::parse("topic\n").unwrap_err().message, "empty topic");
        assert_eq!(Acl::parse("\nuser\n").unwrap_err().line, 2);
        assert!(Acl::parse("topic a/#/b\n")
            .unwrap_err()
            .message
            .contains("a/#/b"));
        assert!(Acl::parse("allow a\n")
            .unwrap_err()
            .message
            .contains("'allow'"));
        // A topic that contains spaces needs the access word (as in Mosquitto).
        let a = Acl::parse("topic read my topic/x\n").unwrap();
        assert!(a.check(who(None, "c"), "my topic/x", READ));
        // `topic read` alone: "read" is the topic.
        let a = Acl::parse("topic read\n").unwrap();
        assert!(a.check(who(None, "c"), "read", WRITE));
    }
}
