use bytes::Bytes;

use super::{EncodeContext, Operation};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};

/// Row 12, raw up (spec §7): opaque bytes to `thing/model/up_raw`; the reply is the bytes
/// the cloud sends on `up_raw_reply`, matched to requests oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawUp {
    /// The bytes to send.
    pub payload: Bytes,
}

impl RawUp {
    /// Send these bytes.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        RawUp { payload: payload.into() }
    }
}

impl Operation for RawUp {
    type Data = Bytes;
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/model/up_raw");
    }
    fn write_method(&self, _: &mut String) {}
    fn write_params(&self, _: &EncodeContext<'_>, _: &mut Vec<u8>) -> Result<(), EncodeError> {
        Ok(())
    }
    fn raw_payload(&self) -> Option<&Bytes> {
        Some(&self.payload)
    }
    fn parse_reply(reply: &Reply) -> Result<Bytes, RequestError> {
        match reply {
            Reply::Raw(b) => Ok(b.clone()),
            Reply::Delivered => Ok(Bytes::new()),
            Reply::Json(_) | Reply::File(_) => {
                Err(RequestError::BadReply("a reply of another kind where raw bytes were expected".into()))
            }
        }
    }
}
