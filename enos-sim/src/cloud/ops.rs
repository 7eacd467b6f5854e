//! The upstream operations of spec §5, told apart by their topics.

use std::borrow::Cow;

use enos_proto::topic::Scope;

/// The upstream operations of spec §5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    TagQuery,
    TagUpdate,
    TagDelete,
    AttributeQuery,
    AttributeUpdate,
    AttributeDelete,
    Post,
    Resume,
    BatchPost,
    BatchResume,
    Event(String),
    RawUp,
    Register,
    TopoGet,
    TopoAdd,
    TopoDelete,
    Login,
    BatchLogin,
    Logout,
    TslGet,
    OtaInform,
    OtaProgress,
    OtaGetVersion,
    LogPost,
    NetworkStatus,
    ConnectionState,
}

/// The operation a request topic names (its scope and the path after the device's keys).
pub(super) fn classify(scope: Scope, path: &str) -> Option<Op> {
    Some(match (scope, path) {
        (Scope::Sys, "thing/tag/query") => Op::TagQuery,
        (Scope::Sys, "thing/tag/update") => Op::TagUpdate,
        (Scope::Sys, "thing/tag/delete") => Op::TagDelete,
        (Scope::Sys, "thing/attribute/query") => Op::AttributeQuery,
        (Scope::Sys, "thing/attribute/update") => Op::AttributeUpdate,
        (Scope::Sys, "thing/attribute/delete") => Op::AttributeDelete,
        (Scope::Sys, "thing/measurepoint/post") => Op::Post,
        (Scope::Sys, "thing/measurepoint/resume") => Op::Resume,
        (Scope::Sys, "thing/measurepoint/post/batch") => Op::BatchPost,
        (Scope::Sys, "thing/measurepoint/resume/batch") => Op::BatchResume,
        (Scope::Sys, "thing/model/up_raw") => Op::RawUp,
        (Scope::Sys, "thing/device/register") => Op::Register,
        (Scope::Sys, "thing/topo/get") => Op::TopoGet,
        (Scope::Sys, "thing/topo/add") => Op::TopoAdd,
        (Scope::Sys, "thing/topo/delete") => Op::TopoDelete,
        (Scope::Sys, "thing/tsltemplate/get") => Op::TslGet,
        (Scope::Sys, "ota/device/inform") => Op::OtaInform,
        (Scope::Sys, "ota/device/progress") => Op::OtaProgress,
        (Scope::Sys, "ota/device/getversion") => Op::OtaGetVersion,
        (Scope::Sys, "thing/log/post") => Op::LogPost,
        (Scope::Sys, "network/status/report") => Op::NetworkStatus,
        (Scope::Sys, "connection/state/post") => Op::ConnectionState,
        (Scope::ExtSession, "combine/login") => Op::Login,
        (Scope::ExtSession, "combine/login/batch") => Op::BatchLogin,
        (Scope::ExtSession, "combine/logout") => Op::Logout,
        (Scope::Sys, p) => {
            let id = p.strip_prefix("thing/event/")?.strip_suffix("/post")?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            Op::Event(id.to_owned())
        }
        _ => return None,
    })
}

impl Op {
    /// The method its envelope must name (empty for raw up, which has no envelope).
    pub(super) fn method(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Op::Event(id) => return Cow::Owned(format!("thing.event.{id}.post")),
            Op::TagQuery => "thing.tag.query",
            Op::TagUpdate => "thing.tag.update",
            Op::TagDelete => "thing.tag.delete",
            Op::AttributeQuery => "thing.attribute.query",
            Op::AttributeUpdate => "thing.attribute.update",
            Op::AttributeDelete => "thing.attribute.delete",
            Op::Post => "thing.measurepoint.post",
            Op::Resume => "thing.measurepoint.resume",
            Op::BatchPost => "thing.measurepoint.post.batch",
            Op::BatchResume => "thing.measurepoint.resume.batch",
            Op::RawUp => "",
            Op::Register => "thing.device.register",
            Op::TopoGet => "thing.topo.get",
            Op::TopoAdd => "thing.topo.add",
            Op::TopoDelete => "thing.topo.delete",
            Op::Login => "combine.login",
            Op::BatchLogin => "combine.login.batch",
            Op::Logout => "combine.logout",
            Op::TslGet => "thing.tsltemplate.get",
            Op::OtaInform => "ota.device.inform",
            Op::OtaProgress => "ota.device.progress",
            Op::OtaGetVersion => "ota.device.getversion",
            Op::LogPost => "thing.log.post",
            Op::NetworkStatus => "network.status.report",
            Op::ConnectionState => "connection.state.post",
        })
    }
}
