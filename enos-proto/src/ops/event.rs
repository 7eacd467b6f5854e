use serde::Serialize;

use super::{check_identifier, unit_reply, write_json, EncodeContext, Operation};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};

/// Row 11, `thing.event.{eventId}.post`: report an event. `E` is any value that
/// serializes to the event's output parameters `{param: value}`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPost<E = serde_json::Map<String, serde_json::Value>> {
    /// The event's TSL identifier (`[A-Za-z0-9_]+`).
    pub event_id: String,
    /// The event's parameters.
    pub params: E,
    /// Epoch milliseconds; `None` stamps the request time.
    pub time: Option<u64>,
}

impl<E: Serialize> EventPost<E> {
    /// Post event `event_id` with these parameters, stamped with the request time.
    pub fn new(event_id: impl Into<String>, params: E) -> Self {
        EventPost { event_id: event_id.into(), params, time: None }
    }
}

#[derive(Serialize)]
struct Wire<'a, E> {
    events: &'a E,
    time: u64,
}

impl<E: Serialize> Operation for EventPost<E> {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/event/");
        out.push_str(&self.event_id);
        out.push_str("/post");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.event.");
        out.push_str(&self.event_id);
        out.push_str(".post");
    }
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_identifier("event id", &self.event_id)?;
        write_json(out, &Wire { events: &self.params, time: self.time.unwrap_or(ctx.unix_ms) })
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}
