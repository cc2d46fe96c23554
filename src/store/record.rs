//! The on-disk record format: what a state change looks like in the log and in snapshots.
//!
//! A file is a header followed by frames:
//!
//! ```text
//! header:   "WRENMQDB" (8 bytes) | format version u16 LE | file kind u8 | reserved u8
//! frame v2: sync D9 5C A7 3E | payload length u32 LE | CRC-32 of length + payload u32 LE | payload
//! frame v1: payload length u32 LE | CRC-32 of the payload u32 LE | payload
//! payload:  record type u8 | fields (integers little-endian, strings and bytes u32-length-prefixed)
//! ```
//!
//! The CRC and the length let recovery tell a complete record from a torn or corrupt one.
//! Version 2 adds the sync marker so that recovery can skip a damaged frame in the middle
//! of a file and go on at the next valid one (a v1 reader can only stop at the first bad
//! frame: a damaged length hides where the next frame starts); its CRC also covers the
//! length, so a damaged length is caught even when it still points inside the file.
//! The header's version lets later releases read old files: a reader refuses versions newer
//! than it knows and keeps decoders for the older ones. Record types are never reused: a
//! record whose layout changes gets a new type (`MessageExtra` is type 18 in v1 files and
//! type 21, with the wall-clock time it was written, in v2 files).
//!
//! Times that must survive a restart are wall-clock (Unix milliseconds), because the
//! monotonic clock starts again at every boot. Records refer to sessions by a
//! numeric id (`SessionOpen` names it once) and to messages by id (`Message` stores topic
//! and payload once, however many sessions queue it), so the per-delivery records that
//! dominate the log are a few bytes each.

use std::fmt;

/// First bytes of every file.
pub const MAGIC: &[u8; 8] = b"WRENMQDB";
/// The format this build writes.
pub const FORMAT_VERSION: u16 = 2;
/// Header length in bytes.
pub const HEADER_LEN: usize = 12;
/// Marker at the start of every v2 frame: where recovery resumes after damage. Chosen to
/// be rare in text and small integers; a false match is still rejected by the CRC.
pub const SYNC: [u8; 4] = [0xD9, 0x5C, 0xA7, 0x3E];
/// Frame header length in the current format (sync + length + CRC).
pub const FRAME_HEADER_LEN: usize = 12;
/// Frame header length in v1 files (length + CRC).
pub const V1_FRAME_HEADER_LEN: usize = 8;
/// Largest payload a reader accepts: a message of the largest packet size plus its topic.
/// A length above this is treated as corruption rather than allocated.
pub const MAX_RECORD_LEN: usize = 300 * 1024 * 1024;

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Changes appended as they happen.
    Log = 1,
    /// The whole live state at one point, written by compaction.
    Snapshot = 2,
}

/// One state change. Borrowed from the buffer it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A message that sessions or the retained store refer to by `id`.
    Message {
        id: u64,
        qos: u8,
        retain: bool,
        topic: &'a str,
        payload: &'a [u8],
    },
    /// `topic`'s retained message is now message `id`.
    Retain {
        topic: &'a str,
        id: u64,
    },
    /// `topic` has no retained message any more.
    RetainClear {
        topic: &'a str,
    },
    /// A persistent session exists for `client_id` under the number `session`.
    SessionOpen {
        session: u64,
        client_id: &'a str,
    },
    /// The session and everything it held is gone.
    SessionDelete {
        session: u64,
    },
    Subscribe {
        session: u64,
        filter: &'a str,
        options: u8,
    },
    Unsubscribe {
        session: u64,
        filter: &'a str,
    },
    /// Message `id` was appended to the session's queue with this delivery QoS and RETAIN.
    Enqueue {
        session: u64,
        id: u64,
        qos: u8,
        retain: bool,
    },
    /// The first queued message left the queue without going in flight (QoS 0 sent).
    Dequeue {
        session: u64,
    },
    /// The first queued message went in flight under `packet_id`.
    QueueToInflight {
        session: u64,
        packet_id: u16,
    },
    /// Message `id` went in flight directly (it was never queued).
    Inflight {
        session: u64,
        packet_id: u16,
        id: u64,
        qos: u8,
        retain: bool,
    },
    /// PUBREC arrived: the QoS 2 delivery now waits for PUBCOMP.
    Pubrec {
        session: u64,
        packet_id: u16,
    },
    /// The delivery ended (PUBACK or PUBCOMP).
    InflightDone {
        session: u64,
        packet_id: u16,
    },
    /// An inbound QoS 2 packet id now awaits PUBREL.
    AwaitPubrel {
        session: u64,
        packet_id: u16,
    },
    /// PUBREL arrived for an inbound QoS 2 packet id.
    Released {
        session: u64,
        packet_id: u16,
    },
    /// The session's MQTT 5 expiry interval in seconds (`u32::MAX` never). Sessions
    /// without this record never expire. After a restart an offline session's interval
    /// counts from its `SessionOffline` time, or from the restart when there is none.
    SessionExpiry {
        session: u64,
        interval: u32,
    },
    /// The MQTT 5 subscription identifier of a subscription (follows its `Subscribe`).
    SubscriptionId {
        session: u64,
        filter: &'a str,
        id: u32,
    },
    /// MQTT 5 extras of message `id` (follows its `Message`): forwarded properties and the
    /// expiry interval left when written (`u32::MAX` none), measured at `written_at` (Unix
    /// milliseconds; 0 = unknown, as in v1 files, where the interval counts from the
    /// restart).
    MessageExtra {
        id: u64,
        expiry: u32,
        written_at: u64,
        properties: &'a [u8],
    },
    /// The user name the session's client last connected with (`None`: no user name). ACL
    /// checks of an offline session use it, so it must survive a restart.
    SessionUser {
        session: u64,
        username: Option<&'a str>,
    },
    /// The session went offline at `since` (Unix milliseconds); 0 = it is online again.
    /// Its expiry interval counts from `since`, across restarts.
    SessionOffline {
        session: u64,
        since: u64,
    },
    /// A message was appended to the session's queue with this delivery QoS and RETAIN,
    /// its topic and payload left where they already are: in the `Message` frame at `at`
    /// (a packed `store::Location`: data file and offset), followed by its
    /// `MessageExtra` frame when `extra`. `bytes` is what it counts against
    /// `max_queued_bytes`. Written by snapshots for queues kept on disk, so that a
    /// snapshot does not copy their payloads (the files they point into are kept).
    EnqueueAt {
        session: u64,
        qos: u8,
        retain: bool,
        extra: bool,
        at: u64,
        bytes: u32,
    },
}

/// Why bytes are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The payload ends inside a field.
    Truncated,
    /// Bytes left after the last field.
    TrailingBytes,
    UnknownType(u8),
    InvalidUtf8,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated => f.write_str("record ends inside a field"),
            RecordError::TrailingBytes => f.write_str("bytes after the last field"),
            RecordError::UnknownType(t) => write!(f, "unknown record type {t}"),
            RecordError::InvalidUtf8 => f.write_str("string is not UTF-8"),
        }
    }
}

mod tag {
    pub const MESSAGE: u8 = 1;
    pub const RETAIN: u8 = 2;
    pub const RETAIN_CLEAR: u8 = 3;
    pub const SESSION_OPEN: u8 = 4;
    pub const SESSION_DELETE: u8 = 5;
    pub const SUBSCRIBE: u8 = 6;
    pub const UNSUBSCRIBE: u8 = 7;
    pub const ENQUEUE: u8 = 8;
    pub const DEQUEUE: u8 = 9;
    pub const QUEUE_TO_INFLIGHT: u8 = 10;
    pub const INFLIGHT: u8 = 11;
    pub const PUBREC: u8 = 12;
    pub const INFLIGHT_DONE: u8 = 13;
    pub const AWAIT_PUBREL: u8 = 14;
    pub const RELEASED: u8 = 15;
    pub const SESSION_EXPIRY: u8 = 16;
    pub const SUBSCRIPTION_ID: u8 = 17;
    /// v1 layout of `MessageExtra` (no `written_at`); read, never written.
    pub const MESSAGE_EXTRA_V1: u8 = 18;
    pub const SESSION_USER: u8 = 19;
    pub const SESSION_OFFLINE: u8 = 20;
    pub const MESSAGE_EXTRA: u8 = 21;
    pub const ENQUEUE_AT: u8 = 22;
}

/// The file header for `kind`.
pub fn header(kind: FileKind) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10] = kind as u8;
    h
}

/// Checks a file header; returns the format version.
pub fn check_header(bytes: &[u8], kind: FileKind) -> Result<u16, String> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err("not a wrenmq data file (bad magic)".into());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version == 0 || version > FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported (this build reads 1..={FORMAT_VERSION})"
        ));
    }
    if bytes[10] != kind as u8 {
        return Err(format!(
            "file kind {} where {} was expected",
            bytes[10], kind as u8
        ));
    }
    Ok(version)
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Lengths come from packets (≤ 2^28) so they fit a u32.
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

impl Record<'_> {
    /// Appends the framed record (sync, length, CRC, payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
        self.encode_payload(out);
        let payload = &out[start + FRAME_HEADER_LEN..];
        let len = (payload.len() as u32).to_le_bytes();
        let crc = frame_crc(len, payload);
        out[start..start + 4].copy_from_slice(&SYNC);
        out[start + 4..start + 8].copy_from_slice(&len);
        out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        let sid = |out: &mut Vec<u8>, tag: u8, session: u64| {
            out.push(tag);
            out.extend_from_slice(&session.to_le_bytes());
        };
        match *self {
            Record::Message {
                id,
                qos,
                retain,
                topic,
                payload,
            } => {
                out.push(tag::MESSAGE);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(qos);
                out.push(u8::from(retain));
                put_str(out, topic.as_bytes());
                put_str(out, payload);
            }
            Record::Retain { topic, id } => {
                out.push(tag::RETAIN);
                out.extend_from_slice(&id.to_le_bytes());
                put_str(out, topic.as_bytes());
            }
            Record::RetainClear { topic } => {
                out.push(tag::RETAIN_CLEAR);
                put_str(out, topic.as_bytes());
            }
            Record::SessionOpen { session, client_id } => {
                sid(out, tag::SESSION_OPEN, session);
                put_str(out, client_id.as_bytes());
            }
            Record::SessionDelete { session } => sid(out, tag::SESSION_DELETE, session),
            Record::Subscribe {
                session,
                filter,
                options,
            } => {
                sid(out, tag::SUBSCRIBE, session);
                out.push(options);
                put_str(out, filter.as_bytes());
            }
            Record::Unsubscribe { session, filter } => {
                sid(out, tag::UNSUBSCRIBE, session);
                put_str(out, filter.as_bytes());
            }
            Record::Enqueue {
                session,
                id,
                qos,
                retain,
            } => {
                sid(out, tag::ENQUEUE, session);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(qos);
                out.push(u8::from(retain));
            }
            Record::Dequeue { session } => sid(out, tag::DEQUEUE, session),
            Record::QueueToInflight { session, packet_id } => {
                sid(out, tag::QUEUE_TO_INFLIGHT, session);
                out.extend_from_slice(&packet_id.to_le_bytes());
            }
            Record::Inflight {
                session,
                packet_id,
                id,
                qos,
                retain,
            } => {
                sid(out, tag::INFLIGHT, session);
                out.extend_from_slice(&packet_id.to_le_bytes());
                out.extend_from_slice(&id.to_le_bytes());
                out.push(qos);
                out.push(u8::from(retain));
            }
            Record::Pubrec { session, packet_id } => {
                sid(out, tag::PUBREC, session);
                out.extend_from_slice(&packet_id.to_le_bytes());
            }
            Record::InflightDone { session, packet_id } => {
                sid(out, tag::INFLIGHT_DONE, session);
                out.extend_from_slice(&packet_id.to_le_bytes());
            }
            Record::AwaitPubrel { session, packet_id } => {
                sid(out, tag::AWAIT_PUBREL, session);
                out.extend_from_slice(&packet_id.to_le_bytes());
            }
            Record::Released { session, packet_id } => {
                sid(out, tag::RELEASED, session);
                out.extend_from_slice(&packet_id.to_le_bytes());
            }
            Record::SessionExpiry { session, interval } => {
                sid(out, tag::SESSION_EXPIRY, session);
                out.extend_from_slice(&interval.to_le_bytes());
            }
            Record::SubscriptionId {
                session,
                filter,
                id,
            } => {
                sid(out, tag::SUBSCRIPTION_ID, session);
                out.extend_from_slice(&id.to_le_bytes());
                put_str(out, filter.as_bytes());
            }
            Record::MessageExtra {
                id,
                expiry,
                written_at,
                properties,
            } => {
                out.push(tag::MESSAGE_EXTRA);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&expiry.to_le_bytes());
                out.extend_from_slice(&written_at.to_le_bytes());
                put_str(out, properties);
            }
            Record::SessionUser { session, username } => {
                sid(out, tag::SESSION_USER, session);
                match username {
                    Some(name) => {
                        out.push(1);
                        put_str(out, name.as_bytes());
                    }
                    None => out.push(0),
                }
            }
            Record::SessionOffline { session, since } => {
                sid(out, tag::SESSION_OFFLINE, session);
                out.extend_from_slice(&since.to_le_bytes());
            }
            Record::EnqueueAt {
                session,
                qos,
                retain,
                extra,
                at,
                bytes,
            } => {
                sid(out, tag::ENQUEUE_AT, session);
                out.push(qos);
                out.push(u8::from(retain) | u8::from(extra) << 1);
                out.extend_from_slice(&at.to_le_bytes());
                out.extend_from_slice(&bytes.to_le_bytes());
            }
        }
    }
}

/// A bounded cursor over one payload.
struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let b = self.take(4)?;
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, RecordError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| RecordError::InvalidUtf8)
    }
}

/// Decodes one payload (the bytes a frame's CRC covers).
pub fn decode_payload(payload: &[u8]) -> Result<Record<'_>, RecordError> {
    let mut f = Fields { buf: payload };
    let record = match f.u8()? {
        tag::MESSAGE => {
            let id = f.u64()?;
            let qos = f.u8()?;
            let retain = f.u8()? != 0;
            Record::Message {
                id,
                qos,
                retain,
                topic: f.str()?,
                payload: f.bytes()?,
            }
        }
        tag::RETAIN => {
            let id = f.u64()?;
            Record::Retain {
                id,
                topic: f.str()?,
            }
        }
        tag::RETAIN_CLEAR => Record::RetainClear { topic: f.str()? },
        tag::SESSION_OPEN => {
            let session = f.u64()?;
            Record::SessionOpen {
                session,
                client_id: f.str()?,
            }
        }
        tag::SESSION_DELETE => Record::SessionDelete { session: f.u64()? },
        tag::SUBSCRIBE => {
            let session = f.u64()?;
            let options = f.u8()?;
            Record::Subscribe {
                session,
                options,
                filter: f.str()?,
            }
        }
        tag::UNSUBSCRIBE => {
            let session = f.u64()?;
            Record::Unsubscribe {
                session,
                filter: f.str()?,
            }
        }
        tag::ENQUEUE => {
            let session = f.u64()?;
            let id = f.u64()?;
            Record::Enqueue {
                session,
                id,
                qos: f.u8()?,
                retain: f.u8()? != 0,
            }
        }
        tag::DEQUEUE => Record::Dequeue { session: f.u64()? },
        tag::QUEUE_TO_INFLIGHT => Record::QueueToInflight {
            session: f.u64()?,
            packet_id: f.u16()?,
        },
        tag::INFLIGHT => {
            let session = f.u64()?;
            let packet_id = f.u16()?;
            let id = f.u64()?;
            Record::Inflight {
                session,
                packet_id,
                id,
                qos: f.u8()?,
                retain: f.u8()? != 0,
            }
        }
        tag::PUBREC => Record::Pubrec {
            session: f.u64()?,
            packet_id: f.u16()?,
        },
        tag::INFLIGHT_DONE => Record::InflightDone {
            session: f.u64()?,
            packet_id: f.u16()?,
        },
        tag::AWAIT_PUBREL => Record::AwaitPubrel {
            session: f.u64()?,
            packet_id: f.u16()?,
        },
        tag::RELEASED => Record::Released {
            session: f.u64()?,
            packet_id: f.u16()?,
        },
        tag::SESSION_EXPIRY => Record::SessionExpiry {
            session: f.u64()?,
            interval: f.u32()?,
        },
        tag::SUBSCRIPTION_ID => {
            let session = f.u64()?;
            let id = f.u32()?;
            Record::SubscriptionId {
                session,
                id,
                filter: f.str()?,
            }
        }
        tag::MESSAGE_EXTRA_V1 => {
            let id = f.u64()?;
            let expiry = f.u32()?;
            Record::MessageExtra {
                id,
                expiry,
                written_at: 0,
                properties: f.bytes()?,
            }
        }
        tag::MESSAGE_EXTRA => {
            let id = f.u64()?;
            let expiry = f.u32()?;
            let written_at = f.u64()?;
            Record::MessageExtra {
                id,
                expiry,
                written_at,
                properties: f.bytes()?,
            }
        }
        tag::SESSION_USER => {
            let session = f.u64()?;
            let username = match f.u8()? {
                0 => None,
                _ => Some(f.str()?),
            };
            Record::SessionUser { session, username }
        }
        tag::SESSION_OFFLINE => Record::SessionOffline {
            session: f.u64()?,
            since: f.u64()?,
        },
        tag::ENQUEUE_AT => {
            let session = f.u64()?;
            let qos = f.u8()?;
            let flags = f.u8()?;
            Record::EnqueueAt {
                session,
                qos,
                retain: flags & 1 != 0,
                extra: flags & 2 != 0,
                at: f.u64()?,
                bytes: f.u32()?,
            }
        }
        other => return Err(RecordError::UnknownType(other)),
    };
    if !f.buf.is_empty() {
        return Err(RecordError::TrailingBytes);
    }
    Ok(record)
}

/// Outcome of reading one frame from the front of `buf`.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete frame whose CRC matches: its payload and total length.
    Complete { payload: &'a [u8], len: usize },
    /// The buffer ends inside the frame (a torn write).
    Torn,
    /// The frame is complete but its CRC does not match, or its length is absurd.
    Corrupt,
}

/// The CRC of a v2 frame: over the length field and the payload.
fn frame_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    h.finalize()
}

/// Reads one frame of a file of format `version` from the front of `buf` (which must not
/// be empty).
pub fn read_frame_of(version: u16, buf: &[u8]) -> Frame<'_> {
    if version == 1 {
        read_frame_v1(buf)
    } else {
        read_frame(buf)
    }
}

/// Reads one frame of the current format from the front of `buf` (which must not be
/// empty).
pub fn read_frame(buf: &[u8]) -> Frame<'_> {
    let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
        // Too short for a header: torn if what is there is the start of one.
        let n = buf.len().min(SYNC.len());
        return if buf[..n] == SYNC[..n] {
            Frame::Torn
        } else {
            Frame::Corrupt
        };
    };
    if head[..4] != SYNC {
        return Frame::Corrupt;
    }
    let len_bytes = [head[4], head[5], head[6], head[7]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if len > MAX_RECORD_LEN {
        return Frame::Corrupt;
    }
    let Some(payload) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Frame::Torn;
    };
    if frame_crc(len_bytes, payload) != crc {
        return Frame::Corrupt;
    }
    Frame::Complete {
        payload,
        len: FRAME_HEADER_LEN + len,
    }
}

/// Reads one v1 frame (no sync marker, CRC of the payload only).
pub fn read_frame_v1(buf: &[u8]) -> Frame<'_> {
    if buf.len() < V1_FRAME_HEADER_LEN {
        return Frame::Torn;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD_LEN {
        return Frame::Corrupt;
    }
    let Some(payload) = buf.get(V1_FRAME_HEADER_LEN..V1_FRAME_HEADER_LEN + len) else {
        return Frame::Torn;
    };
    if crc32fast::hash(payload) != crc {
        return Frame::Corrupt;
    }
    Frame::Complete {
        payload,
        len: V1_FRAME_HEADER_LEN + len,
    }
}

/// Where the next valid current-format frame starts at or after `from`, if any: the
/// resynchronisation point after a damaged frame.
pub fn next_frame(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < buf.len() {
        let found = buf[at..].windows(SYNC.len()).position(|w| w == SYNC)?;
        let candidate = at + found;
        if matches!(read_frame(&buf[candidate..]), Frame::Complete { .. }) {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn samples() -> Vec<Record<'static>> {
        vec![
            Record::Message {
                id: 7,
                qos: 1,
                retain: true,
                topic: "a/b",
                payload: b"\x00hello",
            },
            Record::Retain {
                topic: "a/b",
                id: 7,
            },
            Record::RetainClear { topic: "a/b" },
            Record::SessionOpen {
                session: 3,
                client_id: "sensor-1",
            },
            Record::SessionDelete { session: 3 },
            Record::Subscribe {
                session: 3,
                filter: "a/#",
                options: 2,
            },
            Record::Unsubscribe {
                session: 3,
                filter: "a/#",
            },
            Record::Enqueue {
                session: 3,
                id: 7,
                qos: 1,
                retain: false,
            },
            Record::Dequeue { session: 3 },
            Record::QueueToInflight {
                session: 3,
                packet_id: 65535,
            },
            Record::Inflight {
                session: 3,
                packet_id: 1,
                id: 7,
                qos: 2,
                retain: true,
            },
            Record::Pubrec {
                session: 3,
                packet_id: 1,
            },
            Record::InflightDone {
                session: 3,
                packet_id: 1,
            },
            Record::AwaitPubrel {
                session: 3,
                packet_id: 9,
            },
            Record::Released {
                session: 3,
                packet_id: 9,
            },
            Record::SessionExpiry {
                session: 3,
                interval: 3600,
            },
            Record::SubscriptionId {
                session: 3,
                filter: "a/#",
                id: 268_435_455,
            },
            Record::MessageExtra {
                id: 7,
                expiry: 60,
                written_at: 1_764_820_000_123,
                properties: b"\x03\x00\x04text",
            },
            Record::SessionUser {
                session: 3,
                username: Some("alice"),
            },
            Record::SessionUser {
                session: 3,
                username: None,
            },
            Record::SessionUser {
                session: 3,
                username: Some(""),
            },
            Record::SessionOffline {
                session: 3,
                since: 1_764_820_000_456,
            },
            Record::EnqueueAt {
                session: 3,
                qos: 1,
                retain: true,
                extra: true,
                at: (9 << 40) | 4_096,
                bytes: 117,
            },
        ]
    }

    #[test]
    fn every_record_round_trips_through_a_frame() {
        for r in samples() {
            let mut buf = Vec::new();
            r.encode(&mut buf);
            match read_frame(&buf) {
                Frame::Complete { payload, len } => {
                    assert_eq!(len, buf.len());
                    assert_eq!(decode_payload(payload), Ok(r.clone()));
                }
                other => panic!("{r:?}: {other:?}"),
            }
            for cut in 0..buf.len() {
                assert_eq!(read_frame(&buf[..cut]), Frame::Torn, "{r:?} cut at {cut}");
            }
            let mut flipped = buf.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 0x40;
            assert_eq!(read_frame(&flipped), Frame::Corrupt);
        }
    }

    #[test]
    fn headers_are_checked() {
        let h = header(FileKind::Log);
        assert_eq!(check_header(&h, FileKind::Log), Ok(FORMAT_VERSION));
        assert!(check_header(&h, FileKind::Snapshot).is_err());
        let mut newer = h;
        newer[8] = 99;
        assert!(check_header(&newer, FileKind::Log).is_err());
        assert!(check_header(b"garbage", FileKind::Log).is_err());
    }

    #[test]
    fn payload_faults_are_errors_not_panics() {
        assert_eq!(decode_payload(&[99]), Err(RecordError::UnknownType(99)));
        assert_eq!(
            decode_payload(&[tag::DEQUEUE, 1, 2]),
            Err(RecordError::Truncated)
        );
        assert_eq!(
            decode_payload(&[tag::DEQUEUE, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(RecordError::TrailingBytes)
        );
        assert_eq!(decode_payload(&[]), Err(RecordError::Truncated));
    }
}
