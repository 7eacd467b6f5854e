//! MQTT 3.1.1 framing: an incremental [`Decoder`] with a size limit, and encoders that
//! write into a caller's reused buffer, over this crate's own packet types ([`Packet`]
//! and the rest).
//!
//! Underneath it is `mqttbytes` 0.6, pinned and no longer maintained upstream. No type of
//! it is part of this crate's API: the packets here are the crate's own, converted at
//! this module's edge (`packet.rs`), so the codec can be replaced without breaking
//! users. Replacing it means: decoding the fixed header and the packets this module
//! decodes (a few hundred lines with the remaining-length and UTF-8 checks it maps to
//! [`DecodeError`] today), encoding the packets other than PUBLISH (PUBLISH is already
//! written here), and keeping the property tests that check encoding against decoding
//! and the codec fuzz target green.
//!
//! This module is the only place that touches `mqttbytes`, and it absorbs the crate's
//! known pitfalls:
//!
//! 1. `Connect::write` patches its flags at a fixed offset from the start of the buffer,
//!    so a CONNECT is encoded into scratch space and then appended.
//! 2. Strings over 65,535 bytes would be truncated silently: every string is checked
//!    first and gives [`EncodeError::StringTooLong`].
//! 3. A failed write leaves stray bytes: the buffer is truncated back on every error.
//! 4. Decoding is lenient (a server-side peer must validate what it accepts itself).
//! 5. The size limit covers the remaining length, and an oversize packet consumes
//!    nothing: the decoder stays failed and the connection must be closed.
//!
//! PUBLISH, the hot path, is encoded here directly from borrowed topic and payload (no
//! `String` or `Bytes` per packet); property tests check it against `mqttbytes`' decoder.

use crate::packet::{connect_to, from_wire, to_wire};
pub use crate::packet::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Login, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS,
    SubAck, Subscribe, SubscribeFilter, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use bytes::{BufMut, BytesMut};
use mqttbytes::v4 as w;

use crate::error::{DecodeError, EncodeError, PacketKind};

/// MQTT's largest remaining length.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;
const MAX_STRING: usize = u16::MAX as usize;

/// An incremental decoder: feed it bytes in any chunking, one byte at a time included,
/// and take whole packets out. Its `Debug` shows sizes, never the buffered bytes.
pub struct Decoder {
    buf: BytesMut,
    max_packet_bytes: usize,
    failed: Option<DecodeError>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &self.buf.len())
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Decoder {
    /// A decoder that refuses packets whose remaining length exceeds `max_packet_bytes`.
    pub fn new(max_packet_bytes: usize) -> Self {
        Decoder { buf: BytesMut::new(), max_packet_bytes, failed: None }
    }

    /// Appends bytes read from the transport.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next whole packet, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] when the buffered bytes are not a valid packet. The decoder then
    /// stays failed (returns the same error) until [`Decoder::reset`]: the stream has lost
    /// its framing and the connection must be closed.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        match mqttbytes::v4::read(&mut self.buf, self.max_packet_bytes) {
            Ok(packet) => {
                if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
                    // Give back the room a large packet needed.
                    self.buf = BytesMut::new();
                }
                Ok(Some(from_wire(packet)))
            }
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => {
                let e = map_error(e, self.max_packet_bytes);
                self.failed = Some(e.clone());
                self.buf.clear();
                Err(e)
            }
        }
    }

    /// Bytes buffered that do not yet form a packet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Forgets buffered bytes and any failure, for a new connection.
    pub fn reset(&mut self) {
        self.buf = BytesMut::new();
        self.failed = None;
    }
}

fn map_error(e: mqttbytes::Error, max: usize) -> DecodeError {
    use mqttbytes::Error as E;
    match e {
        E::PayloadSizeLimitExceeded(size) => DecodeError::PacketTooLarge { size, max },
        E::TopicNotUtf8 => DecodeError::InvalidUtf8,
        E::MalformedRemainingLength => DecodeError::Malformed("remaining length over 4 bytes"),
        E::InvalidPacketType(_) => DecodeError::Malformed("invalid packet type"),
        E::InvalidQoS(_) => DecodeError::Malformed("invalid QoS"),
        E::PacketIdZero => DecodeError::Malformed("packet id 0"),
        E::InvalidProtocol => DecodeError::Malformed("protocol name is not MQTT"),
        E::InvalidProtocolLevel(_) => DecodeError::Malformed("unsupported protocol level"),
        E::InvalidConnectReturnCode(_) => DecodeError::Malformed("invalid CONNACK return code"),
        E::InvalidSubscribeReasonCode(_) => DecodeError::Malformed("invalid SUBACK return code"),
        E::BoundaryCrossed(_) => DecodeError::Malformed("field crosses the packet boundary"),
        E::PayloadRequired => DecodeError::Malformed("packet without its required body"),
        E::IncorrectPacketFormat | E::MalformedPacket | E::PayloadSizeIncorrect => {
            DecodeError::Malformed("packet body does not match its type")
        }
        _ => DecodeError::Malformed("invalid packet"),
    }
}

/// The kind of a decoded packet.
pub fn kind(packet: &Packet) -> PacketKind {
    match packet {
        Packet::Connect(_) => PacketKind::Connect,
        Packet::ConnAck(_) => PacketKind::ConnAck,
        Packet::Publish(_) => PacketKind::Publish,
        Packet::PubAck(_) => PacketKind::PubAck,
        Packet::PubRec(_) => PacketKind::PubRec,
        Packet::PubRel(_) => PacketKind::PubRel,
        Packet::PubComp(_) => PacketKind::PubComp,
        Packet::Subscribe(_) => PacketKind::Subscribe,
        Packet::SubAck(_) => PacketKind::SubAck,
        Packet::Unsubscribe(_) => PacketKind::Unsubscribe,
        Packet::UnsubAck(_) => PacketKind::UnsubAck,
        Packet::PingReq => PacketKind::PingReq,
        Packet::PingResp => PacketKind::PingResp,
        Packet::Disconnect => PacketKind::Disconnect,
    }
}

fn check_str(field: &'static str, s: &str) -> Result<(), EncodeError> {
    if s.len() > MAX_STRING {
        Err(EncodeError::StringTooLong { field, len: s.len() })
    } else {
        Ok(())
    }
}

fn write_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

fn remaining_length_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends a PUBLISH to `out`, from a borrowed topic and payload.
///
/// # Errors
///
/// [`EncodeError::StringTooLong`] for a topic over 65,535 bytes,
/// [`EncodeError::PacketIdZero`] for QoS 1 with packet id 0,
/// [`EncodeError::PacketTooLarge`] past MQTT's maximum; `out` is unchanged on error.
pub fn encode_publish(
    out: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    dup: bool,
) -> Result<(), EncodeError> {
    write_publish(out, topic, payload, qos, pkid, dup, false)
}

fn write_publish(
    out: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    dup: bool,
    retain: bool,
) -> Result<(), EncodeError> {
    check_str("topic", topic)?;
    if qos == QoS::ExactlyOnce {
        return Err(EncodeError::QoS2);
    }
    if qos == QoS::AtLeastOnce && pkid == 0 {
        return Err(EncodeError::PacketIdZero);
    }
    let with_id = qos == QoS::AtLeastOnce;
    let remaining = 2 + topic.len() + usize::from(with_id) * 2 + payload.len();
    if remaining > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge);
    }
    out.reserve(1 + remaining_length_len(remaining) + remaining);
    out.put_u8(0x30 | (u8::from(dup) << 3) | ((qos as u8) << 1) | u8::from(retain));
    write_remaining_length(out, remaining);
    out.put_u16(topic.len() as u16);
    out.extend_from_slice(topic.as_bytes());
    if with_id {
        out.put_u16(pkid);
    }
    out.extend_from_slice(payload);
    Ok(())
}

/// Appends a SUBSCRIBE of `filters`, all at `qos`.
///
/// # Errors
///
/// As [`encode_packet`].
pub fn encode_subscribe<'a>(
    out: &mut BytesMut,
    pkid: u16,
    filters: impl IntoIterator<Item = &'a str>,
    qos: QoS,
) -> Result<(), EncodeError> {
    let mut sub = Subscribe::empty_subscribe();
    sub.pkid = pkid;
    for f in filters {
        check_str("topic filter", f)?;
        sub.add(f.to_owned(), qos);
    }
    encode_packet(out, &Packet::Subscribe(sub))
}

/// Appends any packet to `out`, through `mqttbytes` with its pitfalls absorbed.
///
/// # Errors
///
/// [`EncodeError::StringTooLong`] for a string field over 65,535 bytes,
/// [`EncodeError::PacketIdZero`] where a packet id is required,
/// [`EncodeError::PacketTooLarge`] past MQTT's maximum. `out` is unchanged on error.
pub fn encode_packet(out: &mut BytesMut, packet: &Packet) -> Result<(), EncodeError> {
    validate(packet)?;
    if let Packet::Publish(p) = packet {
        return write_publish(out, &p.topic, &p.payload, p.qos, p.pkid, p.dup, p.retain);
    }
    let start = out.len();
    let result = match to_wire(packet) {
        // Pitfall 1: CONNECT must be written at the start of a buffer.
        w::Packet::Connect(c) => {
            let mut scratch = BytesMut::with_capacity(c.len() + 5);
            let r = c.write(&mut scratch);
            if r.is_ok() {
                out.extend_from_slice(&scratch);
            }
            r.map(drop)
        }
        w::Packet::ConnAck(p) => p.write(out).map(drop),
        w::Packet::Publish(p) => p.write(out).map(drop),
        w::Packet::PubAck(p) => p.write(out).map(drop),
        w::Packet::PubRec(p) => p.write(out).map(drop),
        w::Packet::PubRel(p) => p.write(out).map(drop),
        w::Packet::PubComp(p) => p.write(out).map(drop),
        w::Packet::Subscribe(p) => p.write(out).map(drop),
        w::Packet::SubAck(p) => p.write(out).map(drop),
        w::Packet::Unsubscribe(p) => p.write(out).map(drop),
        w::Packet::UnsubAck(p) => p.write(out).map(drop),
        w::Packet::PingReq => w::PingReq.write(out).map(drop),
        w::Packet::PingResp => w::PingResp.write(out).map(drop),
        w::Packet::Disconnect => w::Disconnect.write(out).map(drop),
    };
    result.map_err(|e| {
        // Pitfall 3: no stray bytes after a failed write.
        out.truncate(start);
        match e {
            mqttbytes::Error::PacketIdZero => EncodeError::PacketIdZero,
            _ => EncodeError::PacketTooLarge,
        }
    })
}

fn validate(packet: &Packet) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => {
            check_str("client id", &c.client_id)?;
            if let Some(login) = &c.login {
                check_str("username", &login.username)?;
                check_str("password", &login.password)?;
            }
            if let Some(will) = &c.last_will {
                check_str("will topic", &will.topic)?;
                if will.message.len() > MAX_STRING {
                    return Err(EncodeError::StringTooLong { field: "will message", len: will.message.len() });
                }
            }
            if connect_to(c).len() > MAX_REMAINING_LENGTH {
                return Err(EncodeError::PacketTooLarge);
            }
        }
        Packet::Subscribe(s) => {
            if s.pkid == 0 {
                return Err(EncodeError::PacketIdZero);
            }
            for f in &s.filters {
                check_str("topic filter", &f.path)?;
            }
        }
        Packet::Unsubscribe(u) => {
            if u.pkid == 0 {
                return Err(EncodeError::PacketIdZero);
            }
            for t in &u.topics {
                check_str("topic filter", t)?;
            }
        }
        Packet::PubAck(p) if p.pkid == 0 => return Err(EncodeError::PacketIdZero),
        Packet::SubAck(p) if p.pkid == 0 => return Err(EncodeError::PacketIdZero),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_after_other_bytes_is_not_corrupted() {
        let mut out = BytesMut::new();
        encode_packet(&mut out, &Packet::PingReq).unwrap();
        let mut c = Connect::new("dev");
        c.set_login("dev&pk", "pw");
        encode_packet(&mut out, &Packet::Connect(c.clone())).unwrap();
        let mut d = Decoder::new(1 << 20);
        d.feed(&out);
        assert_eq!(d.next_packet().unwrap(), Some(Packet::PingReq));
        assert_eq!(d.next_packet().unwrap(), Some(Packet::Connect(c)));
    }

    #[test]
    fn long_topic_is_refused_and_leaves_no_bytes() {
        let mut out = BytesMut::from(&b"xy"[..]);
        let topic = "t".repeat(70_000);
        assert_eq!(
            encode_publish(&mut out, &topic, b"p", QoS::AtLeastOnce, 1, false),
            Err(EncodeError::StringTooLong { field: "topic", len: 70_000 })
        );
        assert_eq!(&out[..], b"xy");
    }

    #[test]
    fn qos1_publish_without_packet_id_is_refused() {
        let mut out = BytesMut::new();
        assert_eq!(encode_publish(&mut out, "t", b"p", QoS::AtLeastOnce, 0, false), Err(EncodeError::PacketIdZero));
        let p = Publish::new("t", QoS::AtLeastOnce, "x");
        assert_eq!(encode_packet(&mut out, &Packet::Publish(p)), Err(EncodeError::PacketIdZero));
        assert!(out.is_empty());
    }

    #[test]
    fn oversize_packet_is_a_typed_error_and_sticks() {
        let mut d = Decoder::new(10);
        let mut out = BytesMut::new();
        encode_publish(&mut out, "topic", &[0u8; 32], QoS::AtMostOnce, 0, false).unwrap();
        d.feed(&out[..3]);
        let e = d.next_packet().unwrap_err();
        assert_eq!(e, DecodeError::PacketTooLarge { size: 39, max: 10 });
        assert_eq!(d.next_packet().unwrap_err(), e);
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut out = BytesMut::new();
        encode_publish(&mut out, "a/b", b"hello", QoS::AtLeastOnce, 7, true).unwrap();
        let mut d = Decoder::new(1024);
        for (i, b) in out.iter().enumerate() {
            d.feed(&[*b]);
            let p = d.next_packet().unwrap();
            if i + 1 < out.len() {
                assert!(p.is_none());
            } else {
                let Some(Packet::Publish(p)) = p else { panic!("no publish") };
                assert_eq!((p.topic.as_str(), &p.payload[..], p.pkid, p.dup), ("a/b", &b"hello"[..], 7, true));
            }
        }
    }
}
