use serde::Serialize;

use super::{json_reply, unit_reply, write_json, EncodeContext, Operation};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};

#[derive(Serialize)]
struct Ids<'a> {
    attributes: &'a [String],
}

/// Row 4, `thing.attribute.query`: attribute values (all that have one when empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttributeQuery {
    /// Attribute identifiers; empty reads all.
    pub attributes: Vec<String>,
}

impl AttributeQuery {
    /// Query these attributes (all of them when empty).
    pub fn new<S: Into<String>>(ids: impl IntoIterator<Item = S>) -> Self {
        AttributeQuery { attributes: ids.into_iter().map(Into::into).collect() }
    }
}

impl Operation for AttributeQuery {
    type Data = serde_json::Map<String, serde_json::Value>;
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/attribute/query");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.attribute.query");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_json(out, &Ids { attributes: &self.attributes })
    }
    fn parse_reply(reply: &Reply) -> Result<Self::Data, RequestError> {
        json_reply(reply)
    }
}

/// Row 5, `thing.attribute.update`: set attributes. `A` is any value that serializes to
/// a JSON object of `{id: value}` (a map, a struct, a `serde_json::Value`).
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeUpdate<A = serde_json::Map<String, serde_json::Value>> {
    /// The attributes, `{id: value}`.
    pub attributes: A,
}

impl<A: Serialize> AttributeUpdate<A> {
    /// Set these attributes.
    pub fn new(attributes: A) -> Self {
        AttributeUpdate { attributes }
    }
}

#[derive(Serialize)]
struct Attrs<'a, A> {
    attributes: &'a A,
}

impl<A: Serialize> Operation for AttributeUpdate<A> {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/attribute/update");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.attribute.update");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_json(out, &Attrs { attributes: &self.attributes })
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}

/// Row 6, `thing.attribute.delete`: clear attribute values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttributeDelete {
    /// Attribute identifiers.
    pub attributes: Vec<String>,
}

impl AttributeDelete {
    /// Delete these attributes' values.
    pub fn new<S: Into<String>>(ids: impl IntoIterator<Item = S>) -> Self {
        AttributeDelete { attributes: ids.into_iter().map(Into::into).collect() }
    }
}

impl Operation for AttributeDelete {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/attribute/delete");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.attribute.delete");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_json(out, &Ids { attributes: &self.attributes })
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}
