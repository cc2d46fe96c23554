//! The `mio::Token` space: which token means what.
//!
//! Connections use their slab key as the token. The waker and the listeners use reserved
//! tokens at the very top of `usize`, far above any slab key the loop hands out (keys are
//! also bounded by `u32` for `ConnId::index`), so the two ranges can never meet, on 32-bit
//! boards included.

use mio::Token;

/// Wakes the loop from another thread (shutdown).
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Signals (SIGTERM, SIGINT, SIGHUP) delivered through a self-pipe.
pub(crate) const SIGNALS: Token = Token(usize::MAX - 1);

/// Tokens reserved below [`WAKER`] for listeners.
pub(crate) const MAX_LISTENERS: usize = 256;

/// Bridges, each with two tokens below the listeners' (uplink, primary probe).
pub(crate) const MAX_BRIDGES: usize = 64;

/// Lowest listener token.
const FIRST_LISTENER: usize = usize::MAX - 1 - MAX_LISTENERS;

/// Lowest reserved token; slab keys must stay below it.
const FIRST_RESERVED: usize = FIRST_LISTENER - 2 * MAX_BRIDGES;

/// What an event's token refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Waker,
    Signals,
    Listener(usize),
    /// Bridge `.0`'s uplink (`.1` false) or primary probe (`.1` true).
    Bridge(usize, bool),
    Connection(usize),
}

/// The token of listener number `index` (`index < MAX_LISTENERS`).
pub(crate) fn listener(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(usize::MAX - 2 - index)
}

/// The token of bridge `index`'s uplink or probe (`index < MAX_BRIDGES`).
pub(crate) fn bridge(index: usize, probe: bool) -> Token {
    debug_assert!(index < MAX_BRIDGES);
    Token(FIRST_LISTENER - 1 - 2 * index - usize::from(probe))
}

/// The token for the connection in slab slot `key`, or `None` if the key would collide
/// with the reserved range.
pub(crate) fn connection(key: usize) -> Option<Token> {
    (key < FIRST_RESERVED).then_some(Token(key))
}

/// Classifies an event's token.
pub(crate) fn target(token: Token) -> Target {
    match token.0 {
        usize::MAX => Target::Waker,
        t if t == usize::MAX - 1 => Target::Signals,
        t if t >= FIRST_LISTENER => Target::Listener(usize::MAX - 2 - t),
        t if t >= FIRST_RESERVED => {
            let k = FIRST_LISTENER - 1 - t;
            Target::Bridge(k / 2, k % 2 == 1)
        }
        key => Target::Connection(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(target(WAKER), Target::Waker);
        assert_eq!(target(SIGNALS), Target::Signals);
        for i in [0, 1, MAX_LISTENERS - 1] {
            assert_eq!(target(listener(i)), Target::Listener(i));
        }
        for i in [0, 1, MAX_BRIDGES - 1] {
            for probe in [false, true] {
                assert_eq!(target(bridge(i, probe)), Target::Bridge(i, probe));
            }
        }
        assert_eq!(
            target(listener(MAX_LISTENERS - 1)),
            Target::Listener(MAX_LISTENERS - 1)
        );
        for key in [0, 1, 1 << 20] {
            let token = connection(key).unwrap(); // below the reserved range
            assert_eq!(target(token), Target::Connection(key));
        }
        assert_eq!(connection(usize::MAX - 3), None);
    }
}
