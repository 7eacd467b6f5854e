//! Payload decompression, for both codecs: arbitrary bytes (what a broker may send a
//! compressing session) and a round trip of arbitrary plain bytes.
//! Invariants: no panic; never more than the bound decompressed; what this SDK compresses
//! decompresses to what it was.
#![no_main]

use enos_proto::compress::{Compression, CompressionError, Encoder};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let (codec, rest) = match data.split_first() {
        Some((b, rest)) if b & 1 == 0 => (Compression::Gzip, rest),
        Some((_, rest)) => (Compression::Lz4, rest),
        None => return,
    };
    match codec.decompress(rest, MAX) {
        Ok(plain) => assert!(plain.len() <= MAX),
        Err(CompressionError::TooLarge { max }) => assert_eq!(max, MAX),
        Err(_) => {}
    }
    let mut wire = Vec::new();
    Encoder::new(codec).compress(rest, &mut wire);
    assert_eq!(codec.decompress(&wire, rest.len()).as_deref(), Ok(rest));
});
