//! The codec fed arbitrary bytes in arbitrary chunks: it never panics, and whatever it
//! decodes re-encodes to bytes that decode to the same packet.
#![no_main]

use bytes::BytesMut;
use enos_proto::codec::{self, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let chunk = usize::from(split % 17) + 1;
    let mut d = Decoder::new(64 * 1024);
    for c in rest.chunks(chunk) {
        d.feed(c);
        loop {
            match d.next_packet() {
                Ok(Some(p)) => {
                    let mut out = BytesMut::new();
                    if codec::encode_packet(&mut out, &p).is_ok() {
                        let mut again = Decoder::new(1 << 28);
                        again.feed(&out);
                        assert_eq!(
                            again.next_packet().ok().flatten().as_ref(),
                            Some(&p),
                            "re-encoding changed the packet"
                        );
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // A failed decoder stays failed; the connection would be closed.
                    assert!(d.next_packet().is_err());
                    return;
                }
            }
        }
    }
});
