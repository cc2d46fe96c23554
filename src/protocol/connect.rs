//! CONNECT (§3.1) and CONNACK (§3.2): variable header and payload.
//!
//! CONNECT carries its own protocol version, so it is decoded the same way whatever the
//! connection's version, and encoded with `Connect::version` rather than the caller's.

use super::error::DecodeError;
use super::packet::{Connack, Connect, ProtocolVersion, QoS, Will};
use super::properties::{
    properties_len, put_properties, read_properties, Properties, PropertyContext,
};
use super::reader::Reader;
use super::reason::ReasonCode;
use super::topic;
use super::writer::{put_bin, put_str, put_u16};
use super::PacketType;

// Connect flags (§3.1.2.3).
const USERNAME: u8 = 0x80;
const PASSWORD: u8 = 0x40;
const WILL_RETAIN: u8 = 0x20;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_FLAG: u8 = 0x04;
const CLEAN_START: u8 = 0x02;
const RESERVED: u8 = 0x01;

/// Bridges (Mosquitto, RSMB) set the top bit of the level byte; accepted on 3 and 4.
const BRIDGE_BIT: u8 = 0x80;

impl<'a> Connect<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Connect<'a>, DecodeError> {
        // The name is compared as bytes so an odd name is InvalidProtocolName, not a UTF-8
        // error.
        let name = r.binary()?;
        let level = r.u8()?;
        let version = protocol_version(name, level)?;
        let bridge = !version.is_v5() && level & BRIDGE_BIT != 0;
        let flags = r.u8()?;
        if flags & RESERVED != 0 {
            return Err(DecodeError::ReservedConnectFlag); // [MQTT-3.1.2-3]
        }
        let will_flag = flags & WILL_FLAG != 0;
        let will_retain = flags & WILL_RETAIN != 0;
        let will_qos =
            QoS::from_u8((flags >> WILL_QOS_SHIFT) & 0b11).ok_or(DecodeError::InvalidWillFlags)?; // [MQTT-3.1.2-14]
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::InvalidWillFlags); // [MQTT-3.1.2-11/13/15]
        }
        let has_username = flags & USERNAME != 0;
        let has_password = flags & PASSWORD != 0;
        if has_password && !has_username && !version.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername); // [MQTT-3.1.2-22]
        }
        let keep_alive = r.u16()?;
        let properties = if version.is_v5() {
            read_properties(r, PropertyContext::Packet(PacketType::Connect))?
        } else {
            Properties::EMPTY
        };
        // May be empty: whether to assign one or refuse is the broker's decision.
        let client_id = r.string()?;
        let will = if will_flag {
            let properties = if version.is_v5() {
                read_properties(r, PropertyContext::Will)? // §3.1.3.2
            } else {
                Properties::EMPTY
            };
            let topic = r.string()?;
            if !topic::is_valid_topic_name(topic) {
                return Err(DecodeError::InvalidTopicName); // [MQTT-3.1.3-11]
            }
            Some(Will {
                topic,
                payload: r.binary()?,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            version,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
            bridge,
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        let v5 = self.version.is_v5();
        let mut n = 2 + self.version.protocol_name().len() + 1 + 1 + 2;
        if v5 {
            n += properties_len(&self.properties);
        }
        n += 2 + self.client_id.len();
        if let Some(w) = &self.will {
            if v5 {
                n += properties_len(&w.properties);
            }
            n += 2 + w.topic.len() + 2 + w.payload.len();
        }
        n += self.username.map_or(0, |u| 2 + u.len());
        n += self.password.map_or(0, |p| 2 + p.len());
        n
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        let v5 = self.version.is_v5();
        put_str(out, self.version.protocol_name());
        let bridge = if self.bridge && !v5 { BRIDGE_BIT } else { 0 };
        out.push(self.version.level() | bridge);
        let mut flags = 0;
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        if let Some(w) = &self.will {
            flags |= WILL_FLAG | ((w.qos as u8) << WILL_QOS_SHIFT);
            if w.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.clean_start {
            flags |= CLEAN_START;
        }
        out.push(flags);
        put_u16(out, self.keep_alive);
        if v5 {
            put_properties(out, &self.properties);
        }
        put_str(out, self.client_id);
        if let Some(w) = &self.will {
            if v5 {
                put_properties(out, &w.properties);
            }
            put_str(out, w.topic);
            put_bin(out, w.payload);
        }
        if let Some(u) = self.username {
            put_str(out, u);
        }
        if let Some(p) = self.password {
            put_bin(out, p);
        }
    }
}

impl Connect<'_> {
    /// Appends the whole CONNECT packet as a bridge sends it: for 3.1 and 3.1.1 the level
    /// byte carries the bridge bit 0x80 (Mosquitto's `try_private`), telling a Mosquitto
    /// upstream not to echo our own messages back and to keep their retain flag. 5.0 has
    /// No Local and Retain As Published instead, so a 5.0 CONNECT is encoded unchanged.
    pub fn encode_as_bridge(&self, out: &mut Vec<u8>) {
        let c = Connect {
            bridge: true,
            ..self.clone()
        };
        super::Packet::Connect(c).encode(self.version, out);
    }
}

impl<'a> Connack<'a> {
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<Connack<'a>, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ReservedConnackFlag); // [MQTT-3.2.2-1]
        }
        let code = ReasonCode(r.u8()?);
        let properties = if version.is_v5() {
            read_properties(r, PropertyContext::Packet(PacketType::Connack))?
        } else {
            Properties::EMPTY
        };
        r.finish()?;
        Ok(Connack {
            session_present: flags & 0x01 != 0,
            code,
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            properties_len(&self.properties)
        } else {
            0
        }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        out.push(u8::from(self.session_present));
        out.push(self.code.0);
        if version.is_v5() {
            put_properties(out, &self.properties);
        }
    }
}

/// Protocol name and level to version (§3.1.2.1, §3.1.2.2).
///
/// A known name with an unknown level is `UnsupportedProtocolVersion` (the broker answers
/// CONNACK 0x01 / 0x84 [MQTT-3.1.2-2]); any other name is `InvalidProtocolName`.
fn protocol_version(name: &[u8], level: u8) -> Result<ProtocolVersion, DecodeError> {
    let bare = match level & !BRIDGE_BIT {
        l @ (3 | 4) => l,
        _ => level,
    };
    match (name, bare) {
        (b"MQTT", 4) => Ok(ProtocolVersion::V311),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V31),
        (b"MQTT" | b"MQIsdp", _) => Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_connect_sets_the_level_bit_on_v3_only() {
        for (version, level) in [
            (ProtocolVersion::V31, 0x83),
            (ProtocolVersion::V311, 0x84),
            (ProtocolVersion::V5, 0x05),
        ] {
            let c = Connect {
                version,
                clean_start: false,
                keep_alive: 60,
                properties: Properties::EMPTY,
                client_id: "gw.cloud",
                will: None,
                username: Some("u"),
                password: Some(b"p"),
                bridge: false,
            };
            let mut plain = Vec::new();
            super::super::Packet::Connect(c.clone()).encode(version, &mut plain);
            let mut out = vec![0xAA]; // appends: bytes already there stay
            c.encode_as_bridge(&mut out);
            assert_eq!(out[0], 0xAA);
            let out = &out[1..];
            let at = 2 + 2 + version.protocol_name().len();
            assert_eq!(out[at], level, "{version:?}");
            // Only the level byte differs, and the broker's decoder accepts it.
            let diff: Vec<usize> = (0..out.len()).filter(|&i| out[i] != plain[i]).collect();
            assert!(diff.is_empty() || diff == [at]);
            match super::super::decode(out, None, 1 << 20) {
                Ok(crate::protocol::Status::Complete((super::super::Packet::Connect(d), n))) => {
                    assert_eq!(n, out.len());
                    let bridge = !version.is_v5();
                    assert_eq!(
                        d,
                        Connect {
                            bridge,
                            ..c.clone()
                        }
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn protocol_names_and_levels() {
        assert_eq!(protocol_version(b"MQTT", 4), Ok(ProtocolVersion::V311));
        assert_eq!(protocol_version(b"MQTT", 0x84), Ok(ProtocolVersion::V311));
        assert_eq!(protocol_version(b"MQTT", 5), Ok(ProtocolVersion::V5));
        assert_eq!(
            protocol_version(b"MQTT", 0x85),
            Err(DecodeError::UnsupportedProtocolVersion(0x85))
        );
        assert_eq!(protocol_version(b"MQIsdp", 3), Ok(ProtocolVersion::V31));
        assert_eq!(protocol_version(b"MQIsdp", 0x83), Ok(ProtocolVersion::V31));
        assert_eq!(
            protocol_version(b"MQIsdp", 4),
            Err(DecodeError::UnsupportedProtocolVersion(4))
        );
        assert_eq!(
            protocol_version(b"MQTT", 3),
            Err(DecodeError::UnsupportedProtocolVersion(3))
        );
        assert_eq!(
            protocol_version(b"MQTX", 4),
            Err(DecodeError::InvalidProtocolName)
        );
        assert_eq!(
            protocol_version(b"", 4),
            Err(DecodeError::InvalidProtocolName)
        );
    }
}
