//! The simulator's own CONNECT parser: MQTT 3.1.1 (level 4) and 3.1 (level 3, `MQIsdp`),
//! with every field checked, since the shared decoder is lenient and knows only level 4.

/// The CONNECT fields the simulator uses. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectPacket {
    /// The protocol level (4, or 3 for MQTT 3.1).
    pub level: u8,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// The client id.
    pub client_id: String,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for ConnectPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectPacket")
            .field("level", &self.level)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why the first packet is not an acceptable CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The first packet is not a CONNECT, or does not parse: close without CONNACK.
    Malformed(&'static str),
    /// A protocol name or level the server does not speak: CONNACK 1.
    Protocol,
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, ConnectError> {
        let (&v, rest) = self.b.split_first().ok_or(ConnectError::Malformed("truncated CONNECT"))?;
        self.b = rest;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, ConnectError> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], ConnectError> {
        let n = usize::from(self.u16()?);
        if n > self.b.len() {
            return Err(ConnectError::Malformed("field crosses the packet boundary"));
        }
        let (v, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(v)
    }
    fn string(&mut self) -> Result<String, ConnectError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| ConnectError::Malformed("string is not UTF-8"))
    }
}

/// Parses a CONNECT at the start of `buf`: `Ok(None)` until it is complete, then the
/// packet and the bytes it took.
///
/// # Errors
///
/// [`ConnectError`] for a first packet that is not an acceptable CONNECT.
pub fn parse_connect(buf: &[u8], max_bytes: usize) -> Result<Option<(ConnectPacket, usize)>, ConnectError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    if first != 0x10 {
        return Err(ConnectError::Malformed("the first packet is not a CONNECT"));
    }
    let mut len = 0usize;
    let mut header = 1;
    loop {
        let Some(&b) = buf.get(header) else { return Ok(None) };
        len |= usize::from(b & 0x7f) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err(ConnectError::Malformed("remaining length over 4 bytes"));
        }
    }
    if len > max_bytes {
        return Err(ConnectError::Malformed("CONNECT too large"));
    }
    let Some(body) = buf.get(header..header + len) else { return Ok(None) };
    let mut r = Reader { b: body };
    let name = r.bytes()?;
    let level = r.u8()?;
    match (name, level) {
        (b"MQTT", 4) | (b"MQIsdp", 3) => {}
        (b"MQTT", _) | (b"MQIsdp", _) => return Err(ConnectError::Protocol),
        _ => return Err(ConnectError::Malformed("unknown protocol name")),
    }
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(ConnectError::Malformed("reserved CONNECT flag set"));
    }
    let keep_alive = r.u16()?;
    let client_id = r.string()?;
    if flags & 0x04 != 0 {
        r.string()?;
        r.bytes()?;
    }
    let username = if flags & 0x80 != 0 { r.string()? } else { String::new() };
    let password = if flags & 0x40 != 0 {
        String::from_utf8(r.bytes()?.to_vec()).map_err(|_| ConnectError::Malformed("password is not UTF-8"))?
    } else {
        String::new()
    };
    if !r.b.is_empty() {
        return Err(ConnectError::Malformed("trailing bytes in CONNECT"));
    }
    Ok(Some((ConnectPacket { level, keep_alive, client_id, username, password }, header + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use enos_proto::codec::{self, Connect, Packet};

    #[test]
    fn parses_what_the_sdk_sends_in_any_chunking() {
        let mut c = Connect::new("dev|securemode=2,signmethod=sha256,timestamp=1|");
        c.set_login("dev&pk", "PW");
        let mut b = BytesMut::new();
        codec::encode_packet(&mut b, &Packet::Connect(c)).unwrap();
        for cut in 0..b.len() {
            assert_eq!(parse_connect(&b[..cut], 1 << 16), Ok(None));
        }
        let (p, n) = parse_connect(&b, 1 << 16).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!((p.level, p.username.as_str(), p.password.as_str()), (4, "dev&pk", "PW"));
    }

    #[test]
    fn level_3_is_accepted_and_5_refused() {
        let v31 = [0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 0];
        let (p, _) = parse_connect(&v31, 1024).unwrap().unwrap();
        assert_eq!(p.level, 3);
        let v5 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0];
        assert_eq!(parse_connect(&v5, 1024), Err(ConnectError::Protocol));
        assert!(matches!(parse_connect(&[0x30, 0], 1024), Err(ConnectError::Malformed(_))));
        assert!(matches!(parse_connect(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01], 1024), Err(ConnectError::Malformed(_))));
    }
}
