//! Payload compression as the vendor's newest Java SDK announces and uses it (extensions
//! spec E7).
//!
//! A device that compresses says so in its client id: `CID{compress=GZIP}|securemode=..|`
//! (the block is signed with the id). From then on every PUBLISH payload is compressed, in
//! both directions: requests, raw data, command replies, and everything the cloud sends.
//! CONNECT and SUBSCRIBE are never compressed. The 512 KiB limit applies to the payload
//! before compression.
//!
//! Two codecs: GZIP (one RFC 1952 member) and LZ4 in the lz4-java block stream (not the
//! LZ4 frame format): blocks of `"LZ4Block"`, a token, the compressed and original
//! lengths and an XXH32 checksum, ended by an empty block. LZO, which the vendor's SDK
//! also names, has no well-kept Rust implementation: it is refused when configured
//! ([`CompressionError::Unsupported`]).
//!
//! ```
//! use enos_proto::compress::Compression;
//! let plain = br#"{"id":"1","params":{"measurepoints":{"temp":21.5}}}"#;
//! let mut wire = Vec::new();
//! Compression::Lz4.compress(plain, &mut wire);
//! assert_eq!(Compression::Lz4.decompress(&wire, 512 * 1024).unwrap(), plain);
//! assert_eq!(Compression::parse("gzip").unwrap(), Some(Compression::Gzip));
//! assert!(Compression::parse("LZO").is_err());
//! ```

use std::io::Read;

/// A payload codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// GZIP: one RFC 1952 member.
    Gzip,
    /// LZ4 in the lz4-java block stream.
    Lz4,
}

/// Why a payload could not be compressed, decompressed, or a codec configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// A codec this SDK does not offer (LZO, or a name it does not know).
    #[error("compression {0:?} is not supported (GZIP and LZ4 are)")]
    Unsupported(String),
    /// The bytes are not a valid stream of the codec.
    #[error("not a valid {codec} stream: {reason}")]
    Corrupt {
        /// The codec.
        codec: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The payload would be larger than allowed once decompressed.
    #[error("decompressed payload larger than {max} bytes")]
    TooLarge {
        /// The bound.
        max: usize,
    },
}

impl Compression {
    /// The name in the client id: `GZIP` or `LZ4`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "GZIP",
            Compression::Lz4 => "LZ4",
        }
    }

    /// A codec by its name, in any case: `GZIP`, `LZ4`, or `DEFAULT` (no compression,
    /// `None`).
    ///
    /// # Errors
    ///
    /// [`CompressionError::Unsupported`] for `LZO` and any other name.
    pub fn parse(name: &str) -> Result<Option<Compression>, CompressionError> {
        match name.to_ascii_uppercase().as_str() {
            "DEFAULT" => Ok(None),
            "GZIP" => Ok(Some(Compression::Gzip)),
            "LZ4" => Ok(Some(Compression::Lz4)),
            _ => Err(CompressionError::Unsupported(name.to_owned())),
        }
    }

    /// Appends `plain`, compressed, to `out`. To compress many payloads, an [`Encoder`]
    /// keeps its state between them.
    pub fn compress(self, plain: &[u8], out: &mut Vec<u8>) {
        Encoder::new(self).compress(plain, out);
    }

    /// `data` decompressed, refused past `max` bytes (a small stream that would expand
    /// without bound is stopped there).
    ///
    /// # Errors
    ///
    /// [`CompressionError::Corrupt`] for bytes that are not a stream of this codec (a bad
    /// checksum included), [`CompressionError::TooLarge`] past `max`.
    pub fn decompress(self, data: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
        match self {
            Compression::Gzip => {
                let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
                let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
                flate2::read::MultiGzDecoder::new(data).take(limit).read_to_end(&mut out).map_err(|_| {
                    CompressionError::Corrupt { codec: "GZIP", reason: "the deflate data does not decode" }
                })?;
                if out.len() > max {
                    return Err(CompressionError::TooLarge { max });
                }
                Ok(out)
            }
            Compression::Lz4 => lz4_block::decompress(data, max),
        }
    }
}

/// Compresses payload after payload with one codec, keeping the codec's state (the
/// deflate window and tables, about 200 KiB for GZIP) between them rather than making it
/// anew for each.
pub struct Encoder {
    codec: Compression,
    deflate: Option<Box<flate2::Compress>>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("codec", &self.codec).finish_non_exhaustive()
    }
}

/// The fixed GZIP member header: deflate, no flags, no time, fastest, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff];

impl Encoder {
    /// An encoder for `codec`; its state is made at its first payload.
    pub fn new(codec: Compression) -> Self {
        Encoder { codec, deflate: None }
    }

    /// The codec.
    pub fn codec(&self) -> Compression {
        self.codec
    }

    /// Appends `plain`, compressed, to `out`.
    pub fn compress(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        match self.codec {
            Compression::Gzip => {
                let d = self
                    .deflate
                    .get_or_insert_with(|| Box::new(flate2::Compress::new(flate2::Compression::fast(), false)));
                d.reset();
                out.extend_from_slice(&GZIP_HEADER);
                let start = d.total_in();
                loop {
                    // `compress_vec` writes into spare capacity only.
                    out.reserve(plain.len() / 2 + 64);
                    let done = usize::try_from(d.total_in() - start).unwrap_or(plain.len());
                    match d.compress_vec(&plain[done..], out, flate2::FlushCompress::Finish) {
                        Ok(flate2::Status::StreamEnd) => break,
                        Ok(_) => {}
                        // Compressing into memory does not fail; a stream cut here would
                        // be refused by the peer's checksum.
                        Err(_) => break,
                    }
                }
                let mut crc = crc32fast::Hasher::new();
                crc.update(plain);
                out.extend_from_slice(&crc.finalize().to_le_bytes());
                // ISIZE: the length modulo 2^32 (RFC 1952).
                out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
            }
            Compression::Lz4 => lz4_block::compress(plain, out),
        }
    }
}

/// The parts of an EnOS client id (spec §2.1 with the block of E7):
/// `CID[{k=v,..}]|securemode=M,signmethod=SM,timestamp=TS|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId<'a> {
    /// Everything before the first `|`: what the signature covers as `clientId`.
    pub signed: &'a str,
    /// The client id without its `{..}` block.
    pub cid: &'a str,
    /// The `{..}` block's items in their order (`ip`, `version`, `compress`).
    pub extra: Vec<(&'a str, &'a str)>,
    /// `securemode`.
    pub secure_mode: &'a str,
    /// `signmethod`.
    pub sign_method: &'a str,
    /// `timestamp`.
    pub timestamp: &'a str,
}

impl<'a> ClientId<'a> {
    /// Splits a client id; `None` when it is not of the form above.
    pub fn parse(client_id: &'a str) -> Option<ClientId<'a>> {
        let (signed, rest) = client_id.split_once('|')?;
        let fields = rest.strip_suffix('|')?;
        let (mut mode, mut method, mut ts) = (None, None, None);
        for f in fields.split(',') {
            let (k, v) = f.split_once('=')?;
            match k {
                "securemode" => mode = Some(v),
                "signmethod" => method = Some(v),
                "timestamp" => ts = Some(v),
                _ => {}
            }
        }
        let (cid, extra) = match signed.strip_suffix('}').and_then(|s| s.rsplit_once('{')) {
            Some((cid, block)) => {
                let items = if block.is_empty() {
                    Vec::new()
                } else {
                    block.split(',').map(|i| i.split_once('=')).collect::<Option<Vec<_>>>()?
                };
                (cid, items)
            }
            None => (signed, Vec::new()),
        };
        Some(ClientId { signed, cid, extra, secure_mode: mode?, sign_method: method?, timestamp: ts? })
    }

    /// The `compress` item, `DEFAULT` when absent.
    pub fn compress(&self) -> &'a str {
        self.extra.iter().find(|(k, _)| *k == "compress").map_or("DEFAULT", |(_, v)| v)
    }

    /// The codec the client announced.
    ///
    /// # Errors
    ///
    /// [`CompressionError::Unsupported`] for LZO or a name not known.
    pub fn compression(&self) -> Result<Option<Compression>, CompressionError> {
        Compression::parse(self.compress())
    }
}

/// The client id a device signs and sends before its `|...|` fields: `cid`, followed by
/// `{compress=NAME}` when it compresses (extensions spec C16: no `ip` or `version`).
pub fn signed_client_id(cid: &str, compression: Option<Compression>) -> std::borrow::Cow<'_, str> {
    match compression {
        None => cid.into(),
        Some(c) => format!("{cid}{{compress={}}}", c.name()).into(),
    }
}

/// The lz4-java block stream (`LZ4BlockOutputStream`).
mod lz4_block {
    use super::CompressionError;

    const MAGIC: &[u8; 8] = b"LZ4Block";
    const HEADER: usize = MAGIC.len() + 1 + 4 + 4 + 4;
    const STORED: u8 = 0x10;
    const LZ4: u8 = 0x20;
    /// log2(64 KiB) - 10: lz4-java's default block size.
    const LEVEL: u8 = 6;
    const BLOCK: usize = 1 << (10 + LEVEL as usize);
    const SEED: u32 = 0x9747_B28C;

    fn checksum(data: &[u8]) -> u32 {
        twox_hash::XxHash32::oneshot(SEED, data) & 0x0FFF_FFFF
    }

    fn corrupt(reason: &'static str) -> CompressionError {
        CompressionError::Corrupt { codec: "LZ4", reason }
    }

    fn header(out: &mut Vec<u8>, token: u8, compressed: usize, original: usize, check: u32) {
        out.extend_from_slice(MAGIC);
        out.push(token);
        // Blocks are at most 64 KiB: the lengths fit.
        out.extend_from_slice(&u32::try_from(compressed).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(original).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&check.to_le_bytes());
    }

    pub(super) fn compress(plain: &[u8], out: &mut Vec<u8>) {
        for chunk in plain.chunks(BLOCK) {
            let at = out.len();
            out.resize(at + HEADER + lz4_flex::block::get_maximum_output_size(chunk.len()), 0);
            let n = lz4_flex::block::compress_into(chunk, &mut out[at + HEADER..]).unwrap_or(usize::MAX);
            let check = checksum(chunk);
            if n < chunk.len() {
                out.truncate(at + HEADER + n);
                let mut h = Vec::with_capacity(HEADER);
                header(&mut h, LZ4 | LEVEL, n, chunk.len(), check);
                out[at..at + HEADER].copy_from_slice(&h);
            } else {
                // Stored when compression does not shrink it, as lz4-java does.
                out.truncate(at);
                header(out, STORED | LEVEL, chunk.len(), chunk.len(), check);
                out.extend_from_slice(chunk);
            }
        }
        header(out, STORED | LEVEL, 0, 0, 0);
    }

    fn u32_at(b: &[u8], at: usize) -> usize {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[at..at + 4]);
        u32::from_le_bytes(w) as usize
    }

    pub(super) fn decompress(mut data: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
        let mut out = Vec::new();
        loop {
            if data.len() < HEADER {
                return Err(corrupt("the stream ends before its end block"));
            }
            if &data[..MAGIC.len()] != MAGIC {
                return Err(corrupt("a block does not start with LZ4Block"));
            }
            let token = data[8];
            let (method, level) = (token & 0xF0, token & 0x0F);
            let block = 1usize << (10 + usize::from(level));
            let (compressed, original, check) = (u32_at(data, 9), u32_at(data, 13), u32_at(data, 17) as u32);
            if method != STORED && method != LZ4 {
                return Err(corrupt("unknown block method"));
            }
            if original > block || compressed > block + block / 255 + 16 {
                return Err(corrupt("a block is larger than its token allows"));
            }
            data = &data[HEADER..];
            if original == 0 && compressed == 0 {
                if check != 0 {
                    return Err(corrupt("the end block has a checksum"));
                }
                if !data.is_empty() {
                    return Err(corrupt("bytes after the end block"));
                }
                return Ok(out);
            }
            if data.len() < compressed {
                return Err(corrupt("a block is cut short"));
            }
            let (body, rest) = data.split_at(compressed);
            data = rest;
            if out.len() + original > max {
                return Err(CompressionError::TooLarge { max });
            }
            let at = out.len();
            match method {
                STORED if compressed == original => out.extend_from_slice(body),
                STORED => return Err(corrupt("a stored block's lengths differ")),
                _ => {
                    out.resize(at + original, 0);
                    let n = lz4_flex::block::decompress_into(body, &mut out[at..])
                        .map_err(|_| corrupt("a block does not decode"))?;
                    if n != original {
                        return Err(corrupt("a block decodes to another length than its header says"));
                    }
                }
            }
            if checksum(&out[at..]) != check {
                return Err(corrupt("a block's checksum does not match"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: Compression, plain: &[u8]) {
        let mut wire = Vec::new();
        c.compress(plain, &mut wire);
        assert_eq!(c.decompress(&wire, plain.len()).unwrap(), plain, "{c:?} {}", plain.len());
        if !plain.is_empty() {
            assert_eq!(c.decompress(&wire, plain.len() - 1), Err(CompressionError::TooLarge { max: plain.len() - 1 }));
        }
    }

    #[test]
    fn both_codecs_round_trip_empty_small_and_multi_block_payloads() {
        let json: Vec<u8> = (0..20_000).flat_map(|i| format!("{{\"temp\":{i}.5}},").into_bytes()).collect();
        let noise: Vec<u8> = (0..150_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for c in [Compression::Gzip, Compression::Lz4] {
            for p in [&b""[..], b"x", &json, &noise] {
                round_trip(c, p);
            }
        }
    }

    #[test]
    fn a_damaged_lz4_stream_is_refused_whatever_byte_is_changed() {
        let mut wire = Vec::new();
        Compression::Lz4.compress(br#"{"id":"1","params":{"temp":21.5,"temp2":21.5,"temp3":21.5}}"#, &mut wire);
        for i in 0..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x41;
            assert!(Compression::Lz4.decompress(&bad, 1 << 20).is_err(), "byte {i}");
        }
        for cut in 0..wire.len() {
            assert!(Compression::Lz4.decompress(&wire[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_bound() {
        let zeros = vec![0u8; 4 << 20];
        for c in [Compression::Gzip, Compression::Lz4] {
            let mut wire = Vec::new();
            c.compress(&zeros, &mut wire);
            assert!(wire.len() < 64 << 10, "{c:?}: {}", wire.len());
            assert_eq!(c.decompress(&wire, 512 << 10), Err(CompressionError::TooLarge { max: 512 << 10 }));
        }
    }

    #[test]
    fn the_client_id_carries_the_codec_in_its_signed_part() {
        assert_eq!(signed_client_id("dev", None), "dev");
        assert_eq!(signed_client_id("dev", Some(Compression::Lz4)), "dev{compress=LZ4}");
        let id = ClientId::parse("dev{ip=1.2.3.4,compress=gzip}|securemode=2,signmethod=sha256,timestamp=1|").unwrap();
        assert_eq!((id.signed, id.cid), ("dev{ip=1.2.3.4,compress=gzip}", "dev"));
        assert_eq!(id.compression(), Ok(Some(Compression::Gzip)));
        let lzo = ClientId::parse("dev{compress=LZO}|securemode=2,signmethod=sha256,timestamp=1|").unwrap();
        assert_eq!(lzo.compression(), Err(CompressionError::Unsupported("LZO".into())));
        assert!(ClientId::parse("dev{ip}|securemode=2,signmethod=sha256,timestamp=1|").is_none());
        assert!(ClientId::parse("dev|securemode=2,timestamp=1|").is_none());
    }
}
