//! A bounded cursor over one packet body: the only code that touches raw input bytes.
//!
//! Every read is checked against what is left, so a field that runs past the remaining
//! length is [`DecodeError::Truncated`], never an out-of-bounds index. Sub-blocks (a
//! property block) get their own `Reader` over exactly their bytes, the way rustls nests
//! readers. Also owns the MQTT rules for strings and variable byte integers.

use super::error::DecodeError;

/// Cursor over the bytes not yet read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// Outcome of reading a variable byte integer from a buffer that may be incomplete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and how many bytes encoded it.
    Value(u32, usize),
    /// The buffer ends inside the integer.
    Incomplete,
    /// More than 4 bytes, or not the shortest encoding.
    Malformed,
}

/// Largest value a variable byte integer can carry (§1.5.5).
pub(crate) const VARINT_MAX: u32 = 268_435_455;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(self.buf) {
            VarInt::Value(v, n) => {
                self.buf = self.buf.get(n..).unwrap_or_default();
                Ok(v)
            }
            VarInt::Incomplete => Err(DecodeError::Truncated),
            VarInt::Malformed => Err(DecodeError::MalformedVariableInt),
        }
    }

    /// Two-byte length followed by that many bytes (§1.5.6).
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 encoded string (§1.5.4), checked by [`check_str`].
    pub(crate) fn string(&mut self) -> Result<&'a str, DecodeError> {
        check_str(self.binary()?)
    }

    /// Everything left (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// The packet must end here.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Reads a variable byte integer (§1.5.5) from the front of `buf`.
///
/// Rejects a fifth byte and non-minimal encodings (a final byte of 0 after a continuation
/// byte) [MQTT-1.5.5-1]: they would not survive a re-encode, and Mosquitto rejects them too.
pub(crate) fn read_varint(buf: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for (i, &b) in buf.iter().take(4).enumerate() {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return VarInt::Malformed;
            }
            return VarInt::Value(value, i + 1);
        }
    }
    if buf.len() >= 4 {
        VarInt::Malformed
    } else {
        VarInt::Incomplete
    }
}

/// Validates an MQTT UTF-8 string.
///
/// Beyond well-formed UTF-8 (which `from_utf8` already enforces: no surrogates, no
/// overlong forms, nothing above U+10FFFF) [MQTT-1.5.3-1] [MQTT-1.5.4-1] and no U+0000
/// [MQTT-1.5.3-2] [MQTT-1.5.4-2], we also reject the code points a sender SHOULD NOT use
/// and a receiver MAY treat as malformed (3.1.1 §1.5.3, 5.0 §1.5.4, no normative id):
/// U+0001..U+001F, U+007F..U+009F and Unicode non-characters. This follows Mosquitto 2.0, which the broker imitates where the spec
/// leaves a choice: its `packet__read_string` (lib/packet_datatypes.c) runs
/// `mosquitto_validate_utf8` on *every* string it reads (client id, user name, will and
/// publish topics, filters, string properties), and that function rejects control
/// characters and non-characters. So we apply the rule to every string, not only topics.
pub(crate) fn check_str(bytes: &[u8]) -> Result<&str, DecodeError> {
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if s.chars().any(is_disallowed) {
        return Err(DecodeError::DisallowedCodePoint);
    }
    Ok(s)
}

fn is_disallowed(c: char) -> bool {
    let c = u32::from(c);
    c <= 0x1F
        || (0x7F..=0x9F).contains(&c)
        || (0xFDD0..=0xFDEF).contains(&c)
        || c & 0xFFFE == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_rejects_fifth_byte_and_overlong() {
        assert_eq!(
            read_varint(&[0xFF, 0xFF, 0xFF, 0x7F]),
            VarInt::Value(VARINT_MAX, 4)
        );
        assert_eq!(
            read_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            VarInt::Malformed
        );
        assert_eq!(read_varint(&[0xFF, 0xFF, 0xFF, 0xFF]), VarInt::Malformed);
        assert_eq!(read_varint(&[0x80, 0x00]), VarInt::Malformed); // [MQTT-1.5.5-1]
        assert_eq!(read_varint(&[0x80]), VarInt::Incomplete);
        assert_eq!(read_varint(&[]), VarInt::Incomplete);
    }

    #[test]
    fn strings_follow_mosquitto_rules() {
        assert_eq!(check_str(b"a/b"), Ok("a/b"));
        assert_eq!(check_str("caf\u{e9}".as_bytes()), Ok("caf\u{e9}"));
        assert_eq!(check_str(b"a\0b"), Err(DecodeError::DisallowedCodePoint)); // [MQTT-1.5.4-2]
        assert_eq!(check_str(b"a\x1fb"), Err(DecodeError::DisallowedCodePoint));
        assert_eq!(check_str(b"a\x7fb"), Err(DecodeError::DisallowedCodePoint));
        assert_eq!(
            check_str("\u{85}".as_bytes()),
            Err(DecodeError::DisallowedCodePoint)
        );
        assert_eq!(
            check_str("\u{FDD0}".as_bytes()),
            Err(DecodeError::DisallowedCodePoint)
        );
        assert_eq!(
            check_str("\u{FFFF}".as_bytes()),
            Err(DecodeError::DisallowedCodePoint)
        );
        assert_eq!(
            check_str("\u{10FFFE}".as_bytes()),
            Err(DecodeError::DisallowedCodePoint)
        );
        assert_eq!(
            check_str(&[0xED, 0xA0, 0x80]),
            Err(DecodeError::InvalidUtf8)
        ); // surrogate
        assert_eq!(check_str(&[0xC0, 0xAF]), Err(DecodeError::InvalidUtf8)); // overlong '/'
    }

    #[test]
    fn reads_are_bounded() {
        let mut r = Reader::new(&[0x00, 0x05, b'a']);
        assert_eq!(r.binary(), Err(DecodeError::Truncated));
        let mut r = Reader::new(&[0x01]);
        assert_eq!(r.u16(), Err(DecodeError::Truncated));
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u8(), Err(DecodeError::Truncated));
        assert!(r.finish().is_ok());
    }
}
