use std::collections::BTreeMap;

use serde::Serialize;

use super::{json_reply, unit_reply, write_json, EncodeContext, Operation};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};

#[derive(Serialize)]
struct Keys<'a> {
    tags: &'a [String],
}

/// Row 1, `thing.tag.query`: the values of some tags, or of all when the list is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagQuery {
    /// Tag keys to read; empty reads all.
    pub tags: Vec<String>,
}

impl TagQuery {
    /// Query these tags (all of them when empty).
    pub fn new<S: Into<String>>(tags: impl IntoIterator<Item = S>) -> Self {
        TagQuery { tags: tags.into_iter().map(Into::into).collect() }
    }
}

impl Operation for TagQuery {
    type Data = BTreeMap<String, String>;
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/tag/query");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.tag.query");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_json(out, &Keys { tags: &self.tags })
    }
    fn parse_reply(reply: &Reply) -> Result<Self::Data, RequestError> {
        json_reply(reply)
    }
}

/// Row 2, `thing.tag.update`: upsert tags (values are strings).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagUpdate {
    /// `(tagKey, tagValue)` pairs, in order.
    pub tags: Vec<(String, String)>,
}

impl TagUpdate {
    /// Set these tags.
    pub fn new<K: Into<String>, V: Into<String>>(tags: impl IntoIterator<Item = (K, V)>) -> Self {
        TagUpdate { tags: tags.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TagEntry<'a> {
    tag_key: &'a str,
    tag_value: &'a str,
}

impl Operation for TagUpdate {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/tag/update");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.tag.update");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let entries: Vec<TagEntry<'_>> = self.tags.iter().map(|(k, v)| TagEntry { tag_key: k, tag_value: v }).collect();
        write_json(out, &entries)
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}

/// Row 3, `thing.tag.delete`: remove tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagDelete {
    /// Tag keys to delete.
    pub tags: Vec<String>,
}

impl TagDelete {
    /// Delete these tags.
    pub fn new<S: Into<String>>(tags: impl IntoIterator<Item = S>) -> Self {
        TagDelete { tags: tags.into_iter().map(Into::into).collect() }
    }
}

impl Operation for TagDelete {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/tag/delete");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.tag.delete");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_json(out, &Keys { tags: &self.tags })
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}
