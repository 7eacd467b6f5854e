//! Every vector of the EnOS wire contract: signatures, upstream topics and payloads, and
//! downstream commands with their exact replies.

mod support;

use bytes::Bytes;
use enos_proto::codec::{Packet, QoS};
use enos_proto::ops::{
    self, AttributeDelete, AttributeQuery, AttributeUpdate, BatchEntry, ConnectionNode, ConnectionStatePost,
    DeviceName, EncodeContext, EventPost, LogPost, MeasurepointBatchPost, MeasurepointBatchResume, MeasurepointPost,
    MeasurepointResume, NetworkStatusReport, NodeState, OtaGetVersion, OtaInform, OtaProgress, SubDeviceBatchLogin,
    SubDeviceLogin, SubDeviceLogout, SubDeviceRegister, SubDeviceRegistration, TagDelete, TagQuery, TagUpdate, TopoAdd,
    TopoDelete, TopoGet, TslTemplateGet,
};
use enos_proto::sign::{connect_fields, sign_device, SecureMode, SignMethod};
use enos_proto::{
    Command, CommandKind, Config, Credentials, DeviceKeys, Event, JsonReply, Operation, Reply, Secret, SubDeviceInfo,
};
use std::collections::BTreeMap;

use enos_proto::ops::{BatchLoginResult, Firmware, LoginResult, RegisteredDevice, TopoEntry, TslTemplate};
use enos_proto::RequestOptions;
use serde_json::{json, Value};
use support::*;

fn sign_vectors() -> Vec<Value> {
    let v: Value = serde_json::from_str(include_str!("data/sign.json")).unwrap();
    v["vectors"].as_array().unwrap().clone()
}

fn extensions() -> Vec<Value> {
    let v: Value = serde_json::from_str(include_str!("data/extensions.json")).unwrap();
    v["vectors"].as_array().unwrap().clone()
}

/// The extension vector called `name`.
fn extension(name: &str) -> Value {
    extensions().into_iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no vector {name}"))
}

fn messages() -> Value {
    serde_json::from_str(include_str!("data/messages.json")).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn mode(v: &Value) -> SecureMode {
    match v.as_u64().unwrap() {
        2 => SecureMode::DeviceSecret,
        3 => SecureMode::ProductSecret,
        m => panic!("mode {m}"),
    }
}

#[test]
fn every_signature_vector() {
    let mut checked = 0;
    for v in sign_vectors() {
        let name = s(&v["name"]);
        let i = &v["inputs"];
        match s(&v["kind"]) {
            "connect" => {
                let keys = keys(s(&i["productKey"]), s(&i["deviceKey"]));
                let method = SignMethod::from_label(s(&i["signMethod"])).unwrap();
                let ts: u64 = s(&i["timestamp"]).parse().unwrap();
                let f = connect_fields(
                    &keys,
                    s(&i["clientIdPrefix"]),
                    mode(&i["secureMode"]),
                    method,
                    ts,
                    &Secret::new(s(&i["secret"])),
                );
                let e = &v["expected"];
                assert_eq!(f.client_id, s(&e["clientId"]), "{name}");
                assert_eq!(f.username, s(&e["username"]), "{name}");
                assert_eq!(f.password.expose(), s(&e["password"]), "{name}");
            }
            "subdevice_login" | "topo_add" => {
                let keys = keys(s(&i["productKey"]), s(&i["deviceKey"]));
                let method = SignMethod::from_label(s(&i["signMethod"])).unwrap();
                let sign =
                    sign_device(method, s(&i["clientId"]), &keys, s(&i["timestamp"]), &Secret::new(s(&i["secret"])));
                assert_eq!(sign, s(&v["expected"]["sign"]), "{name}");
            }
            "batch_login" => {
                let method = SignMethod::from_label(s(&i["signMethod"])).unwrap();
                for (d, e) in
                    i["subDevices"].as_array().unwrap().iter().zip(v["expected"]["subDevices"].as_array().unwrap())
                {
                    let keys = keys(s(&d["productKey"]), s(&d["deviceKey"]));
                    let sign = sign_device(
                        method,
                        s(&i["clientId"]),
                        &keys,
                        s(&i["timestamp"]),
                        &Secret::new(s(&d["deviceSecret"])),
                    );
                    assert_eq!(sign, s(&e["sign"]), "{name} {keys}");
                }
                // The batch operation itself produces the same signatures.
                let devices = i["subDevices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| SubDeviceInfo::new(keys(s(&d["productKey"]), s(&d["deviceKey"])), s(&d["deviceSecret"])))
                    .collect();
                let gw = keys(s(&i["gatewayProductKey"]), s(&i["gatewayDeviceKey"]));
                let ts: u64 = s(&i["timestamp"]).parse().unwrap();
                let enc =
                    ops::encode(&SubDeviceBatchLogin::new(devices), &gw, 1, &EncodeContext { unix_ms: ts, own: &gw })
                        .unwrap();
                let payload = json(&enc.payload);
                assert_eq!(payload["params"]["clientId"], i["clientId"]);
                let signs: Vec<&Value> =
                    payload["params"]["subDevices"].as_array().unwrap().iter().map(|d| &d["sign"]).collect();
                let expected: Vec<&Value> =
                    v["expected"]["subDevices"].as_array().unwrap().iter().map(|d| &d["sign"]).collect();
                assert_eq!(signs, expected);
            }
            "reference_only" => continue,
            k => panic!("unknown kind {k}"),
        }
        checked += 1;
    }
    assert!(checked >= 17, "only {checked} vectors checked");
}

/// The CONNECT the client itself sends matches the vectors, in every mode.
#[test]
fn connect_packet_matches_vectors() {
    for v in sign_vectors().iter().filter(|v| v["kind"] == "connect") {
        let i = &v["inputs"];
        let secret = Secret::new(s(&i["secret"]));
        let credentials = match mode(&i["secureMode"]) {
            SecureMode::DeviceSecret => Credentials::DeviceSecret(secret),
            _ => Credentials::ProductSecret(secret),
        };
        let mut c = Config::new(keys(s(&i["productKey"]), s(&i["deviceKey"])), credentials);
        c.client_id = Some(s(&i["clientIdPrefix"]).to_owned());
        c.sign_method = SignMethod::from_label(s(&i["signMethod"])).unwrap();
        let mut p = Pair::new(c);
        p.now.unix_ms = s(&i["timestamp"]).parse().unwrap();
        p.drive();
        let Some(Packet::Connect(connect)) = p.cloud.received.first() else { panic!("no CONNECT") };
        let login = connect.login.as_ref().unwrap();
        assert_eq!(connect.client_id, s(&v["expected"]["clientId"]));
        assert_eq!(login.username, s(&v["expected"]["username"]));
        assert_eq!(login.password, s(&v["expected"]["password"]));
        assert!(connect.clean_session);
        assert_eq!(connect.keep_alive, 60);
    }
}

/// Builds the operation a vector describes and checks its encoding and reply parsing.
fn check_op<O: Operation>(v: &Value, op: O, own: &DeviceKeys)
where
    O::Data: AsWire,
{
    let i = &v["inputs"];
    let name = s(&v["name"]);
    let keys = keys(s(&i["productKey"]), s(&i["deviceKey"]));
    let id: u32 = s(&i["id"]).parse().unwrap();
    let enc = ops::encode(&op, &keys, id, &EncodeContext { unix_ms: T0_UNIX_MS, own }).unwrap();
    assert_eq!(enc.topic, s(&v["topic"]), "{name}");
    assert_eq!(format!("{}_reply", enc.topic), s(&v["replyTopic"]), "{name}");
    assert_eq!(json(&enc.payload), v["payload"], "{name}");
    assert_eq!(json(&enc.payload)["method"], v["method"], "{name}");
    let reply_text = serde_json::to_vec(&v["exampleReply"]["payload"]).unwrap();
    let reply: JsonReply = serde_json::from_slice::<Value>(&reply_text)
        .map(|r| {
            JsonReply::new(
                s(&r["id"]),
                i32::try_from(r["code"].as_i64().unwrap()).unwrap(),
                Some(&r["data"].to_string()),
                None,
            )
            .unwrap()
        })
        .unwrap();
    let data = O::parse_reply(&Reply::Json(reply)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(data.as_wire(), v["exampleReply"]["payload"]["data"], "{name}");
    through_client(v, op);
}

/// Sends the vector's operation through a connected client: it goes out at the vector's
/// QoS on its topic, and the vector's example reply, answered to the id it went out
/// with, ends the request with the typed data the reply carries.
fn through_client<O: Operation>(v: &Value, op: O)
where
    O::Data: AsWire,
{
    let name = s(&v["name"]);
    let (topic, reply_topic) = (s(&v["topic"]), s(&v["replyTopic"]));
    let gateway = s(&v["connection"]).contains("gwPK0001") || s(&v["inputs"]["productKey"]) == "gwPK0001";
    let mut p = Pair::connected(if gateway { gateway_config() } else { config() });
    let own = p.client.device().clone();
    let target = keys(s(&v["inputs"]["productKey"]), s(&v["inputs"]["deviceKey"]));
    let mut opts = RequestOptions::new();
    // Rows 13-19 name the sub-device in their params, on the gateway's own topic.
    if target != own && !op.gateway_only() {
        opts = opts.target(target);
    }
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, op, opts).unwrap();
    p.drive();
    let sent = pubs_to(&p.cloud, topic);
    assert_eq!(sent.len(), 1, "{name}");
    assert_eq!(sent[0].qos, qos_of(&v["qos"]), "{name}");
    let mut reply = v["exampleReply"]["payload"].clone();
    reply["id"] = json(&sent[0].payload)["id"].clone();
    assert_eq!(s(&v["exampleReply"]["topic"]), reply_topic, "{name}");
    p.cloud.publish(reply_topic, reply.to_string().as_bytes(), QoS::AtMostOnce);
    p.drive();
    let data = O::parse_reply(&p.response(id).unwrap_or_else(|e| panic!("{name}: {e}")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(data.as_wire(), v["exampleReply"]["payload"]["data"], "{name}");
}

/// A reply's typed data written back in the cloud's field names, by hand (not through
/// the types' own serde), to compare with a vector's `exampleReply`.
trait AsWire {
    fn as_wire(&self) -> Value;
}

impl AsWire for () {
    fn as_wire(&self) -> Value {
        json!({})
    }
}

impl AsWire for BTreeMap<String, String> {
    fn as_wire(&self) -> Value {
        Value::Object(self.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
    }
}

impl AsWire for serde_json::Map<String, Value> {
    fn as_wire(&self) -> Value {
        Value::Object(self.clone())
    }
}

fn keys_wire(k: &DeviceKeys) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("productKey".into(), json!(k.product_key()));
    m.insert("deviceKey".into(), json!(k.device_key()));
    m
}

impl AsWire for Option<DeviceKeys> {
    fn as_wire(&self) -> Value {
        self.as_ref().map_or(json!({}), |k| Value::Object(keys_wire(k)))
    }
}

impl AsWire for Vec<TopoEntry> {
    fn as_wire(&self) -> Value {
        self.iter()
            .map(|e| {
                let mut m = keys_wire(&keys(&e.product_key, &e.device_key));
                if let Some(a) = &e.asset_id {
                    m.insert("assetId".into(), json!(a));
                }
                if let Some(n) = &e.device_name {
                    m.insert("deviceName".into(), n.clone());
                }
                Value::Object(m)
            })
            .collect()
    }
}

impl AsWire for Vec<RegisteredDevice> {
    fn as_wire(&self) -> Value {
        self.iter()
            .map(|d| {
                json!({"assetId": d.asset_id, "productKey": d.product_key, "deviceKey": d.device_key,
                       "deviceSecret": d.device_secret.expose()})
            })
            .collect()
    }
}

impl AsWire for LoginResult {
    fn as_wire(&self) -> Value {
        let mut m = keys_wire(&keys(&self.product_key, &self.device_key));
        if let Some(a) = &self.asset_id {
            m.insert("assetId".into(), json!(a));
        }
        if let Some(s) = &self.device_secret {
            m.insert("deviceSecret".into(), json!(s.expose()));
        }
        Value::Object(m)
    }
}

impl AsWire for BatchLoginResult {
    fn as_wire(&self) -> Value {
        json!({
            "loginedSubDevices": self.logged_in.iter().map(AsWire::as_wire).collect::<Vec<_>>(),
            "failedSubDevices": self.failed.iter().map(|k| Value::Object(keys_wire(k))).collect::<Vec<_>>(),
        })
    }
}

impl AsWire for TslTemplate {
    fn as_wire(&self) -> Value {
        json!({"tslAttributeMap": self.tsl_attribute_map, "tslMeasurepointMap": self.tsl_measurepoint_map,
               "tslEventMap": self.tsl_event_map, "tslServiceMap": self.tsl_service_map})
    }
}

impl AsWire for Vec<Firmware> {
    fn as_wire(&self) -> Value {
        self.iter()
            .map(|f| {
                json!({"version": f.version, "signMethod": f.sign_method, "sign": f.sign, "fileUrl": f.file_url,
                       "fileSize": f.file_size})
            })
            .collect()
    }
}

fn points(v: &Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| s(x).to_owned()).collect()
}

fn sub_secret(dk: &str) -> &'static str {
    match dk {
        "sub_dev_01" => "SubSecret0001",
        "sub_dev_02" => "SubSecret0002",
        _ => panic!("no secret for {dk}"),
    }
}

fn batch_entries(params: &Value) -> Vec<BatchEntry> {
    params
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let time = e["time"].as_u64();
            match e.get("productKey") {
                Some(pk) => BatchEntry::of(keys(s(pk), s(&e["deviceKey"])), points(&e["measurepoints"]), time),
                None => BatchEntry::own(points(&e["measurepoints"]), time),
            }
        })
        .collect()
}

#[test]
fn every_upstream_vector() {
    let m = messages();
    let mut checked = 0;
    for v in m["upstream"].as_array().unwrap() {
        let p = &v["inputs"]["params"];
        let own = keys(s(&v["inputs"]["productKey"]), s(&v["inputs"]["deviceKey"]));
        let mp_time = p["time"].as_u64().unwrap_or(0);
        match s(&v["name"]) {
            "tag_query" | "tag_query_all" => check_op(v, TagQuery::new(strings(&p["tags"])), &own),
            "tag_update" => check_op(
                v,
                TagUpdate::new(
                    p.as_array().unwrap().iter().map(|t| (s(&t["tagKey"]).to_owned(), s(&t["tagValue"]).to_owned())),
                ),
                &own,
            ),
            "tag_delete" => check_op(v, TagDelete::new(strings(&p["tags"])), &own),
            "attribute_query" => check_op(v, AttributeQuery::new(strings(&p["attributes"])), &own),
            "attribute_update" => check_op(v, AttributeUpdate::new(points(&p["attributes"])), &own),
            "attribute_delete" => check_op(v, AttributeDelete::new(strings(&p["attributes"])), &own),
            "measurepoint_post" | "measurepoint_post_on_behalf_of_subdevice" => {
                check_op(v, MeasurepointPost::at(points(&p["measurepoints"]), mp_time), &own)
            }
            "measurepoint_resume" => check_op(v, MeasurepointResume::at(points(&p["measurepoints"]), mp_time), &own),
            "measurepoint_post_batch" => check_op(v, MeasurepointBatchPost::new(batch_entries(p)), &own),
            "measurepoint_resume_batch" => check_op(v, MeasurepointBatchResume::new(batch_entries(p)), &own),
            "event_post" => {
                let mut e = EventPost::new("overheat", points(&p["events"]));
                e.time = Some(mp_time);
                check_op(v, e, &own)
            }
            "subdevice_register" => {
                let r = &p[0];
                let mut reg = SubDeviceRegistration::new(
                    s(&r["productKey"]),
                    DeviceName::new(s(&r["deviceName"]["defaultValue"]))
                        .with("en_US", s(&r["deviceName"]["i18nValue"]["en_US"])),
                );
                reg.device_key = Some(s(&r["deviceKey"]).to_owned());
                reg.timezone = s(&r["timezone"]).to_owned();
                reg.device_attributes = Some(points(&r["deviceAttributes"]));
                reg.device_desc = Some(s(&r["deviceDesc"]).to_owned());
                check_op(v, SubDeviceRegister::new(vec![reg]), &own)
            }
            "topo_get" => check_op(v, TopoGet, &own),
            "topo_add" => {
                let entries = p
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        let dk = s(&e["deviceKey"]);
                        (
                            SubDeviceInfo::new(keys(s(&e["productKey"]), dk), sub_secret(dk)),
                            s(&e["timestamp"]).parse().unwrap(),
                        )
                    })
                    .collect();
                check_op(v, TopoAdd::with_timestamps(entries), &own)
            }
            "topo_delete" => check_op(
                v,
                TopoDelete::new(
                    p.as_array().unwrap().iter().map(|e| keys(s(&e["productKey"]), s(&e["deviceKey"]))).collect(),
                ),
                &own,
            ),
            "subdevice_login" => {
                let dk = s(&p["deviceKey"]);
                let op = SubDeviceLogin::new(SubDeviceInfo::new(keys(s(&p["productKey"]), dk), sub_secret(dk)));
                let ts: u64 = s(&p["timestamp"]).parse().unwrap();
                check_login(v, op, &own, ts);
            }
            "subdevice_login_batch" => {
                let devices = p["subDevices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| {
                        let dk = s(&d["deviceKey"]);
                        SubDeviceInfo::new(keys(s(&d["productKey"]), dk), sub_secret(dk))
                    })
                    .collect();
                let ts: u64 = s(&p["timestamp"]).parse().unwrap();
                check_login(v, SubDeviceBatchLogin::new(devices), &own, ts);
            }
            "subdevice_logout" => {
                check_op(v, SubDeviceLogout::new(keys(s(&p["productKey"]), s(&p["deviceKey"]))), &own)
            }
            "tsl_template_get" => check_op(v, TslTemplateGet {}, &own),
            "ota_version_report" => check_op(v, OtaInform::new(s(&p["version"])), &own),
            "ota_progress_report" => check_op(v, OtaProgress::new(s(&p["step"]), s(&p["desc"])), &own),
            "ota_get_version" => check_op(v, OtaGetVersion {}, &own),
            n => panic!("no test for upstream vector {n}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 24);
}

/// Logins sign with the request's wall-clock time: encode at the vector's timestamp.
fn check_login<O: Operation>(v: &Value, op: O, own: &DeviceKeys, ts: u64)
where
    O::Data: AsWire,
{
    let i = &v["inputs"];
    let id: u32 = s(&i["id"]).parse().unwrap();
    let enc = ops::encode(&op, own, id, &EncodeContext { unix_ms: ts, own }).unwrap();
    assert_eq!(enc.topic, s(&v["topic"]));
    assert_eq!(json(&enc.payload), v["payload"], "{}", s(&v["name"]));
    let r = &v["exampleReply"]["payload"];
    let reply = JsonReply::new(s(&r["id"]), 200, Some(&r["data"].to_string()), None).unwrap();
    let data = O::parse_reply(&Reply::Json(reply)).unwrap();
    assert_eq!(data.as_wire(), r["data"], "{}", s(&v["name"]));
    through_client(v, op);
}

#[test]
fn raw_up_vector() {
    let m = messages();
    let v = &m["raw"][0];
    let own = keys("pk1234ab", "dev_001");
    let bytes = hex(s(&v["payloadHex"]));
    let enc = ops::encode(&ops::RawUp::new(bytes.clone()), &own, 1, &EncodeContext { unix_ms: 0, own: &own }).unwrap();
    assert_eq!(enc.topic, s(&v["topic"]));
    assert_eq!(enc.payload, bytes);

    // Through the client: QoS 1, the reply topic subscribed first, the reply bytes returned.
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, ops::RawUp::new(bytes.clone()), Default::default()).unwrap();
    p.drive();
    assert!(p.cloud.subscribed().contains(&s(&v["replyTopic"]).to_owned()));
    let sent = pubs_to(&p.cloud, s(&v["topic"]));
    assert_eq!((sent.len(), sent[0].qos, &sent[0].payload), (1, qos_of(&v["qos"]), &bytes));
    let reply = hex(s(&v["exampleReplyHex"]));
    p.cloud.publish(s(&v["replyTopic"]), &reply, QoS::AtMostOnce);
    p.drive();
    assert_eq!(p.response(id), Ok(Reply::Raw(reply)));
}

fn hex(h: &str) -> Bytes {
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect::<Vec<u8>>().into()
}

/// A gateway with `subPK01/sub_dev_01` logged in, so sub-device commands reach it.
fn gateway_with_sub_device() -> Pair {
    let mut c = gateway_config();
    c.device = keys("gwPK0001", "gw_dev_01");
    let mut p = Pair::connected(c);
    let id = p
        .client
        .request(
            p.now,
            SubDeviceLogin::new(SubDeviceInfo::new(keys("subPK01", "sub_dev_01"), "SubSecret0001")),
            Default::default(),
        )
        .unwrap();
    p.cloud.replies = Replies::Hold;
    p.drive();
    let held = p.cloud.held.remove(0);
    p.cloud.answer(&held, r#"{"assetId":"Xy98Zw76","productKey":"subPK01","deviceKey":"sub_dev_01"}"#);
    p.drive();
    assert!(p.response(id).is_ok());
    assert_eq!(p.client.logged_in_sub_devices().count(), 1);
    p
}

fn last_command(p: &Pair) -> Command {
    p.events
        .iter()
        .rev()
        .find_map(|e| if let Event::Command(c) = e { Some((**c).clone()) } else { None })
        .expect("no command")
}

#[test]
fn every_downstream_vector() {
    let m = messages();
    let mut checked = 0;
    for v in m["downstream"].as_array().unwrap() {
        let name = s(&v["name"]);
        let inbound_topic = s(&v["inbound"]["topic"]);
        let payload = serde_json::to_vec(&v["inbound"]["payload"]).unwrap();
        let mut p = if inbound_topic.contains("gwPK0001") || inbound_topic.contains("subPK01") {
            gateway_with_sub_device()
        } else if name == "activate_info" {
            let mut c = config();
            c.credentials = Credentials::ProductSecret("PSzyxw9876".into());
            Pair::connected(c)
        } else {
            Pair::connected(config())
        };
        let before = p.cloud.publishes().len();
        p.cloud.publish(inbound_topic, &payload, QoS::AtLeastOnce);
        p.drive();
        // A QoS 1 command is acknowledged at once.
        assert!(
            matches!(p.cloud.received.iter().rev().find(|x| matches!(x, Packet::PubAck(_))), Some(Packet::PubAck(a)) if a.pkid == 77)
        );
        let want = &v["reply"];
        let want_data = &want["payload"]["data"];
        if name == "activate_info" {
            // The core answers the activation itself and adopts the secret.
            assert!(p.events.iter().any(|e| matches!(e, Event::Activated { device_secret, .. } if device_secret.expose() == "NewDeviceSecret12345")));
            assert!(
                matches!(p.client.credentials(), Credentials::DeviceSecret(s) if s.expose() == "NewDeviceSecret12345")
            );
        } else {
            let cmd = last_command(&p);
            assert_eq!(cmd.id, s(&v["inputs"]["id"]), "{name}");
            assert_eq!(cmd.device, keys(s(&v["inputs"]["productKey"]), s(&v["inputs"]["deviceKey"])), "{name}");
            let reply = match (&cmd.kind, name) {
                (_, "command_without_handler") => cmd.reply_to.no_handler(),
                (CommandKind::InvokeService { service_id, params }, _) => {
                    assert_eq!(service_id, "restart");
                    assert_eq!(params, &v["inbound"]["payload"]["params"]);
                    cmd.reply_to.ok(want_data).unwrap()
                }
                (CommandKind::SetMeasurepoints { points }, _) => {
                    assert_eq!(Value::Object(points.clone()), v["inbound"]["payload"]["params"]);
                    cmd.reply_to.ok_empty()
                }
                (CommandKind::GetMeasurepoints { point_ids }, _) => {
                    assert_eq!(point_ids, &["temp", "Power"]);
                    cmd.reply_to.ok(want_data).unwrap()
                }
                (
                    CommandKind::EnableSubDevices { devices }
                    | CommandKind::DisableSubDevices { devices }
                    | CommandKind::DeleteSubDevices { devices },
                    _,
                ) => {
                    assert_eq!(devices, &[keys("subPK01", "sub_dev_01")]);
                    cmd.reply_to.ok_empty()
                }
                (CommandKind::OtaUpgrade { firmware }, _) => {
                    assert_eq!((firmware.version.as_str(), firmware.file_size), ("1.0.4", 1024));
                    cmd.reply_to.ok_empty()
                }
                (
                    CommandKind::EnableDevice { .. }
                    | CommandKind::DisableDevice { .. }
                    | CommandKind::DeleteDevice { .. },
                    _,
                ) => cmd.reply_to.ok_empty(),
                (k, n) => panic!("{n}: unexpected {k:?}"),
            };
            p.client.reply(p.now, reply).unwrap();
            p.drive();
        }
        let sent: Vec<_> = p.cloud.publishes().into_iter().skip(before).collect();
        assert_eq!(sent.len(), 1, "{name}: {sent:?}");
        let r = sent[0];
        assert_eq!(r.topic, s(&want["topic"]), "{name}");
        assert_eq!(r.qos, qos_of(&want["qos"]), "{name}");
        assert_eq!(r.retain, want["retain"].as_bool().unwrap(), "{name}");
        assert_eq!(json(&r.payload), want["payload"], "{name}");
        checked += 1;
    }
    assert_eq!(checked, 13);
}

#[test]
fn raw_down_vector() {
    let m = messages();
    let v = &m["raw"][1];
    let mut p = Pair::connected(config());
    p.cloud.publish(s(&v["topic"]), &hex(s(&v["payloadHex"])), QoS::AtLeastOnce);
    p.drive();
    let cmd = last_command(&p);
    assert_eq!(cmd.kind, CommandKind::RawDown { payload: hex(s(&v["payloadHex"])) });
    assert!(cmd.reply_to.is_raw());
    p.client.reply(p.now, cmd.reply_to.raw(hex(s(&v["exampleReplyHex"])))).unwrap();
    p.drive();
    let sent = pubs_to(&p.cloud, s(&v["replyTopic"]));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].payload, hex(s(&v["exampleReplyHex"])));
    assert_eq!(sent[0].qos, qos_of(&v["replyQos"]));
}

/// A vector's `qos` field.
fn qos_of(v: &Value) -> QoS {
    match v.as_u64() {
        Some(0) => QoS::AtMostOnce,
        Some(1) => QoS::AtLeastOnce,
        q => panic!("qos {q:?}"),
    }
}

/// The device's reports about itself (extensions spec E5): each built from the vector's
/// inputs through the typed operation, encoded to the vector's topic and payload, sent at
/// its QoS, and ended by its example reply.
#[test]
fn every_device_report_vector() {
    let mut checked = 0;
    for v in extensions().iter().filter(|v| v["kind"] == "message") {
        let name = s(&v["name"]);
        let p = &v["payload"]["params"];
        let own = keys("pk1234ab", "dev_001");
        // The extension vectors carry their id in the payload only.
        let mut v = v.clone();
        v["inputs"]["id"] = v["payload"]["id"].clone();
        v["connection"] = json!("direct");
        let v = &v;
        match name {
            "log_post" => {
                let l = &p["logs"];
                let log = LogPost::new()
                    .trace_id(s(&l["traceId"]))
                    .level(s(&l["level"]))
                    .module(s(&l["module"]))
                    .content(s(&l["content"]))
                    .at(p["time"].as_u64().unwrap());
                check_op(v, log, &own)
            }
            "network_status_report" | "network_status_report_minimal" => {
                let mut r = NetworkStatusReport::new();
                r.report_time = p["reportTime"].as_u64();
                r.collect_time = p["collectTime"].as_u64();
                r.rssi = p["rssi"].as_f64();
                r.snr = p["snr"].as_f64();
                r.packet_loss_rate = p["packetLossRate"].as_f64();
                r.network_type = p["networkType"].as_str().map(String::from);
                r.error_info = p["errorInfo"].as_str().map(String::from);
                check_op(v, r, &own)
            }
            "connection_state_post_full" | "connection_state_post_update" => {
                let nodes = p["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| {
                        let state = match n["state"].as_u64().unwrap() {
                            1 => NodeState::Connected,
                            2 => NodeState::Disconnected,
                            _ => NodeState::Unknown,
                        };
                        let text = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
                        ConnectionNode::new(s(&n["nodeId"]), state)
                            .asset_id(text("assetId"))
                            .name(text("name"))
                            .info(text("info"))
                    })
                    .collect();
                let mut post = if p["isFull"] == true {
                    ConnectionStatePost::full(nodes)
                } else {
                    ConnectionStatePost::update(nodes)
                };
                for (parent, children) in p["relations"].as_object().unwrap() {
                    post = post.relation(parent.clone(), strings(children));
                }
                check_op(v, post.at(p["reportTime"].as_u64().unwrap()), &own)
            }
            n if n.starts_with("integration_") => continue,
            n => panic!("no test for extension vector {n}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn a_connection_state_update_with_relations_is_refused_before_it_is_sent() {
    let own = keys("pk1234ab", "dev_001");
    let ctx = EncodeContext { unix_ms: T0_UNIX_MS, own: &own };
    let update =
        ConnectionStatePost::update(vec![ConnectionNode::new("#1", NodeState::Connected)]).relation("#1", ["#2"]);
    assert!(matches!(ops::encode(&update, &own, 1, &ctx), Err(enos_proto::EncodeError::Invalid { .. })));
    let no_id = ConnectionStatePost::full(vec![ConnectionNode::new("", NodeState::Connected)]);
    assert!(matches!(ops::encode(&no_id, &own, 1, &ctx), Err(enos_proto::EncodeError::Invalid { .. })));
}

/// Traffic control (extensions spec E6, C13): handed over with its method and params as
/// sent, and answered 200 on `…/traffic/control_reply` at QoS 0 when no handler takes it.
#[test]
fn traffic_control_vector() {
    let v = extension("traffic_control");
    let mut p = Pair::connected(config());
    let before = p.cloud.publishes().len();
    p.cloud.publish(s(&v["inbound"]["topic"]), s(&v["inbound"]["payloadText"]).as_bytes(), QoS::AtLeastOnce);
    p.drive();
    let cmd = last_command(&p);
    assert_eq!(cmd.id, s(&v["inputs"]["id"]));
    assert_eq!(
        cmd.kind,
        CommandKind::TrafficControl {
            method: "traffic.control".into(),
            params: v["inbound"]["payload"]["params"].clone()
        }
    );
    p.client.reply(p.now, cmd.unhandled_reply().unwrap()).unwrap();
    p.drive();
    let sent: Vec<_> = p.cloud.publishes().into_iter().skip(before).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let want = &v["reply"];
    assert_eq!(sent[0].topic, s(&want["topic"]));
    assert_eq!(sent[0].qos, qos_of(&want["qos"]));
    assert_eq!(sent[0].retain, want["retain"].as_bool().unwrap());
    assert_eq!(json(&sent[0].payload), want["payload"]);
}

/// Every compression vector (extensions spec E7): the bytes of the vendor's encoders
/// (GZIP from Python and from Java 17, and lz4-java block streams with a stored, a
/// literal-only and a compressed block) decompress to the plain text; this SDK's own
/// output of the same text decompresses back too.
#[test]
fn every_compression_vector() {
    use enos_proto::compress::Compression;
    let mut checked = 0;
    for v in extensions().iter().filter(|v| v["kind"] == "compression") {
        let name = s(&v["name"]);
        let codec = Compression::parse(s(&v["inputs"]["codec"])).unwrap().unwrap();
        let plain = s(&v["inputs"]["plainText"]).as_bytes();
        let wire = hex(s(&v["expected"]["compressedHex"]));
        assert_eq!(codec.decompress(&wire, 512 * 1024).unwrap_or_else(|e| panic!("{name}: {e}")), plain, "{name}");
        let mut ours = Vec::new();
        codec.compress(plain, &mut ours);
        assert_eq!(codec.decompress(&ours, plain.len()).unwrap(), plain, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// How a client id splits (extensions spec E7): its signed part, the id without its block,
/// the block's items, the three fields, and the codec (`DEFAULT` when none is named).
#[test]
fn every_client_id_parse_vector() {
    use enos_proto::compress::ClientId;
    let mut checked = 0;
    for v in extensions().iter().filter(|v| v["kind"] == "client_id_parse") {
        let (name, e) = (s(&v["name"]), &v["expected"]);
        let id = ClientId::parse(s(&v["inputs"]["clientId"])).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(id.signed, s(&e["signedClientId"]), "{name}");
        assert_eq!(id.cid, s(&e["cid"]), "{name}");
        let extra: serde_json::Map<String, Value> = id.extra.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        assert_eq!(Value::Object(extra), e["extra"], "{name}");
        assert_eq!(
            (id.secure_mode, id.sign_method, id.timestamp, id.compress()),
            (s(&e["securemode"]), s(&e["signmethod"]), s(&e["timestamp"]), s(&e["compress"])),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// The CONNECTs of a compressing device (extensions spec E7, C16). This SDK's own form
/// (`{compress=GZIP}` or `{compress=LZ4}` only, upper-case password) is what the client
/// sends; the vendor's Java form (with `ip` and `version`, lower-case) signs the same way.
#[test]
fn every_compressing_connect_vector() {
    use enos_proto::compress::{ClientId, Compression};
    let mut checked = 0;
    for v in extensions().iter().filter(|v| v["kind"] == "mqtt_connect" && v["inputs"]["secureMode"] == 2) {
        let (name, i, e) = (s(&v["name"]), &v["inputs"], &v["expected"]);
        let secret = Secret::new(s(&i["secret"]));
        let (pk, dk, ts) = (s(&i["productKey"]), s(&i["deviceKey"]), s(&i["timestamp"]));
        let sign = sign_device(SignMethod::Sha256, s(&i["clientIdBase"]), &keys(pk, dk), ts, &secret);
        assert!(sign.eq_ignore_ascii_case(s(&e["password"])), "{name}");
        let codec = ClientId::parse(s(&e["clientId"])).unwrap().compression().unwrap();
        if i["hexCase"] == "upper" {
            let mut c = Config::new(keys(pk, dk), Credentials::DeviceSecret(secret));
            c.compression = codec;
            let mut p = Pair::new(c);
            p.now.unix_ms = ts.parse().unwrap();
            p.drive();
            let Some(Packet::Connect(connect)) = p.cloud.received.first() else { panic!("no CONNECT") };
            let login = connect.login.as_ref().unwrap();
            assert_eq!(connect.client_id, s(&e["clientId"]), "{name}");
            assert_eq!(login.username, s(&e["username"]), "{name}");
            assert_eq!(login.password, s(&e["password"]), "{name}");
        } else {
            assert!(codec.is_none() || codec == Some(Compression::Gzip), "{name}");
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
}

/// The integration channel (extensions spec E4): its CONNECT as this SDK sends it (the
/// vendor's Python and Java forms sign the same way), and each of its requests built from
/// the vector's entries, sent at its QoS and ended by its example reply; the refused one
/// ends with the cloud's code.
#[test]
fn every_integration_channel_vector() {
    use enos_proto::ops::{IntegrationPost, IntegrationRawUp};
    let mut checked = 0;
    for v in extensions().iter().filter(|v| s(&v["name"]).starts_with("connect_mode4")) {
        let (name, i, e) = (s(&v["name"]), &v["inputs"], &v["expected"]);
        let secret = Secret::new(s(&i["secret"]));
        let (pk, ts) = (s(&i["productKey"]), s(&i["timestamp"]));
        let channel = keys(pk, enos_proto::INTEGRATION_DEVICE_KEY);
        let method = SignMethod::from_label(s(&i["signMethod"])).unwrap();
        let sign = sign_device(method, s(&i["clientIdBase"]), &channel, ts, &secret);
        assert!(sign.eq_ignore_ascii_case(s(&e["password"])), "{name}");
        if i["hexCase"] == "upper" {
            let mut p = Pair::new(Config::new(channel, Credentials::IntegrationChannel(secret)));
            p.now.unix_ms = ts.parse().unwrap();
            p.drive();
            let Some(Packet::Connect(connect)) = p.cloud.received.first() else { panic!("no CONNECT") };
            let login = connect.login.as_ref().unwrap();
            assert_eq!(
                (connect.client_id.as_str(), login.username.as_str(), login.password.as_str()),
                (s(&e["clientId"]), s(&e["username"]), s(&e["password"])),
                "{name}"
            );
        }
        checked += 1;
    }
    let own = keys("pk1234ab", "dev_001");
    for v in extensions().iter().filter(|v| v["kind"] == "message" && s(&v["name"]).starts_with("integration_")) {
        let name = s(&v["name"]);
        let mut v = v.clone();
        v["inputs"]["id"] = v["payload"]["id"].clone();
        v["inputs"]["deviceKey"] = json!("dev_001");
        v["connection"] = json!("integration");
        let mut post = match s(&v["method"]) {
            "integration.measurepoint.post" => IntegrationPost::measurepoints(),
            "integration.event.post" => IntegrationPost::events(),
            _ => IntegrationPost::attributes(),
        };
        for e in v["payload"]["params"].as_array().unwrap() {
            let values = e.as_object().unwrap().iter().find(|(k, _)| *k != "deviceKey" && *k != "time").unwrap().1;
            post = post.entry(s(&e["deviceKey"]), e["time"].as_u64(), values.clone());
        }
        if v["exampleReply"]["payload"]["code"] == 200 {
            check_op(&v, post, &own);
        } else {
            let enc = ops::encode(&post, &own, 104, &EncodeContext { unix_ms: T0_UNIX_MS, own: &own }).unwrap();
            assert_eq!((enc.topic.as_str(), json(&enc.payload)), (s(&v["topic"]), v["payload"].clone()), "{name}");
            let r = &v["exampleReply"]["payload"];
            let code = i32::try_from(r["code"].as_i64().unwrap()).unwrap();
            let reply = JsonReply::new(s(&r["id"]), code, None, r["message"].as_str()).unwrap();
            let e = <IntegrationPost as Operation>::parse_reply(&Reply::Json(reply)).unwrap_err();
            assert!(matches!(e, enos_proto::RequestError::Rejected { code: 1257, .. }), "{name}: {e:?}");
        }
        checked += 1;
    }
    let v = extension("integration_up_raw");
    let bytes = hex(s(&v["payloadHex"]));
    let enc =
        ops::encode(&IntegrationRawUp::new(bytes.clone()), &own, 1, &EncodeContext { unix_ms: T0_UNIX_MS, own: &own })
            .unwrap();
    assert_eq!((enc.topic.as_str(), &enc.payload), (s(&v["topic"]), &bytes));
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, IntegrationRawUp::new(bytes), RequestOptions::new()).unwrap();
    p.drive();
    p.cloud.publish(s(&v["replyTopic"]), &hex(s(&v["exampleReplyHex"])), QoS::AtMostOnce);
    p.drive();
    assert_eq!(p.response(id), Ok(Reply::Raw(hex(s(&v["exampleReplyHex"])))));
    checked += 1;
    assert_eq!(checked, 3 + 4 + 1);
}

/// The HTTP transport's requests (extensions spec E1, E2): each login's signature and
/// body, each request's method, URL, content type, headers and body, the broker URL's
/// trailing slash, a command's reply, and the fixed names.
#[test]
fn every_http_request_vector() {
    use enos_proto::http::{
        ByteRange, FileCategory, HttpRequest, HttpTarget, COMMAND_PAYLOAD_HEADER, COMMAND_TOPIC_HEADER,
    };
    let wire = |r: &HttpRequest, t: &HttpTarget| {
        let mut out = Vec::new();
        r.write(t, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut checked = 0;
    for v in extensions() {
        let (name, i, e) = (s(&v["name"]), &v["inputs"], &v["expected"]);
        let target = || HttpTarget::parse(s(&i["brokerUrl"])).unwrap();
        let sid = i["sessionId"].as_str().unwrap_or_default();
        let own = || keys(s(&i["productKey"]), s(&i["deviceKey"]));
        let request = match s(&v["kind"]) {
            "http_auth_sign" => {
                let secret = Secret::new(s(&i["deviceSecret"]));
                let lifetime = i["lifetime"].as_u64().unwrap();
                assert_eq!(enos_proto::http::auth_sign(&own(), &secret, lifetime), s(&e["sign"]), "{name}");
                let r = target().login(&own(), &secret, lifetime, &[]);
                let mut body: Value = serde_json::from_slice(&r.body).unwrap();
                // The vendor's Java body adds fields this SDK leaves out (spec C21).
                let want = &e["request"]["body"];
                if want.get("clientInfo").is_some() {
                    let accept =
                        [enos_proto::http::CommandType::OtaUpgrade, enos_proto::http::CommandType::PendingInvoke];
                    let with = target().login(&own(), &secret, lifetime, &accept);
                    let with: Value = serde_json::from_slice(&with.body).unwrap();
                    assert_eq!(with["acceptCommandTypes"], want["acceptCommandTypes"], "{name}");
                    body["clientInfo"] = want["clientInfo"].clone();
                    body["acceptCommandTypes"] = want["acceptCommandTypes"].clone();
                } else {
                    assert_eq!(&r.body[..], s(&e["request"]["bodyText"]).as_bytes(), "{name}");
                }
                assert_eq!(&body, want, "{name}");
                (r, &e["request"])
            }
            "http_request" if name.starts_with("http_publish") => {
                let raw = e["contentType"] == OCTETS;
                let body = if raw { hex(s(&e["bodyHex"])) } else { Bytes::from(s(&e["bodyText"]).to_owned()) };
                (target().publish(s(&i["topic"]), sid, body, raw), e)
            }
            "http_request" => {
                let category = if i["category"] == "ota" { FileCategory::Ota } else { FileCategory::Feature };
                let r = match name {
                    "file_download_full" => target().download(&own(), sid, s(&i["fileUri"]), category, None),
                    "file_download_range" => {
                        let forms = &e["rangeHeaderForms"];
                        assert_eq!(ByteRange::From(8).header(), s(&forms["startOnly"]));
                        assert_eq!(ByteRange::Last(7).header(), s(&forms["endOnly"]));
                        let range = ByteRange::Span {
                            start: i["startRange"].as_u64().unwrap(),
                            end: i["endRange"].as_u64().unwrap(),
                        };
                        target().download(&own(), sid, s(&i["fileUri"]), category, Some(range))
                    }
                    "file_get_download_url" => target().download_url(&own(), sid, s(&i["fileUri"]), category),
                    "file_delete" => target().delete_file(&own(), sid, s(&i["fileUri"])),
                    n => panic!("no test for {n}"),
                };
                let headers: Vec<(String, String)> =
                    r.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect();
                let want: Vec<(String, String)> = e["requestHeaders"]
                    .as_object()
                    .map(|h| h.iter().map(|(k, v)| (k.to_ascii_lowercase(), s(v).to_owned())).collect())
                    .unwrap_or_default();
                assert_eq!(headers, want, "{name}");
                (r, e)
            }
            "http_url_join" => {
                let t = target();
                assert_eq!(format!("{}{}{}", t.origin(), t.base_path, s(&i["path"])), s(&e["canonicalUrl"]), "{name}");
                checked += 1;
                continue;
            }
            "http_command" => {
                let headers = &e["responseHeaders"];
                assert!(headers.get(COMMAND_PAYLOAD_HEADER).is_some() && headers.get(COMMAND_TOPIC_HEADER).is_some());
                let reply = &e["deviceReply"];
                let topic = format!("{}_reply", s(&headers["topic"]));
                (target().publish(&topic, sid, Bytes::from(s(&reply["bodyText"]).to_owned()), false), reply)
            }
            "constants" => {
                let paths = &e["paths"];
                let t = HttpTarget::parse("http://h").unwrap();
                let k = keys("{pk}", "{dk}");
                assert_eq!(t.login(&k, &Secret::new("s"), 1, &[]).path, s(&paths["auth"]));
                assert_eq!(
                    t.publish("{topic}", "S", Bytes::new(), false).path,
                    format!("{}?sessionId=S", s(&paths["publish"]))
                );
                assert_eq!(
                    t.multipart("{topic}", "S", "b", Bytes::new()).path,
                    format!("{}?sessionId=S", s(&paths["multipartPublish"]))
                );
                assert!(t
                    .download(&k, "S", "u", FileCategory::Ota, None)
                    .path
                    .starts_with(&format!("{}?", s(&paths["download"]))));
                assert!(t
                    .download_url(&k, "S", "u", FileCategory::Feature)
                    .path
                    .starts_with(&format!("{}?", s(&paths["downloadUrl"]))));
                assert!(t.delete_file(&k, "S", "u").path.starts_with(&format!("{}?", s(&paths["delete"]))));
                assert_eq!(
                    (FileCategory::Feature.name(), FileCategory::Ota.name()),
                    (s(&e["categories"]["FEATURE"]), s(&e["categories"]["OTA"]))
                );
                checked += 1;
                continue;
            }
            _ => continue,
        };
        let (r, want) = request;
        assert_eq!(r.method.as_str(), s(&want["method"]), "{name}");
        assert_eq!(r.url(&target()), s(&want["url"]), "{name}");
        assert_eq!(r.content_type.as_deref(), want["contentType"].as_str(), "{name}");
        // (The vendor's Java login body has fields this SDK leaves out: compared above.)
        if let (Some(text), None) = (want["bodyText"].as_str(), want["body"].get("clientInfo")) {
            assert_eq!(&r.body[..], text.as_bytes(), "{name}");
        }
        // On the wire: the request line, Host, and the body after the head.
        let w = wire(&r, &target());
        let line = format!(
            "{} {} HTTP/1.1\r\nHost: iot-http.example.com\r\n",
            r.method,
            &s(&want["url"])["https://iot-http.example.com".len()..]
        );
        assert!(w.starts_with(&line), "{name}: {w}");
        assert!(w.ends_with(&*String::from_utf8_lossy(&r.body)), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 3 + 6 + 1 + 1 + 1);
}

const OCTETS: &str = "application/octet-stream";

/// A measure point post with files (extensions spec E2.2): the request part with its
/// `local://` references and `files` map, then one part per file with its name, MD5 and
/// bytes, in a body a multipart reader splits back into those parts.
#[test]
fn every_multipart_vector() {
    use enos_proto::http::{FileUpload, HttpTarget, MeasurepointFilePost};
    let mut checked = 0;
    for v in extensions().iter().filter(|v| v["kind"] == "multipart") {
        let (name, i, e) = (s(&v["name"]), &v["inputs"], &v["expected"]);
        let mut post = MeasurepointFilePost::new(Vec::new()).at(i["time"].as_u64().unwrap());
        for (k, x) in i["otherMeasurepoints"].as_object().into_iter().flatten() {
            post = post.point(k.clone(), x.clone());
        }
        for f in i["files"].as_array().unwrap() {
            let seed: [u8; 8] = hex(s(&f["randomBytesHex"]))[..].try_into().unwrap();
            let content = match f["contentText"].as_str() {
                Some(t) => Bytes::from(t.to_owned()),
                None => hex(s(&f["contentHex"])),
            };
            let mut upload = FileUpload::new(s(&f["measurepointId"]), s(&f["originalFilename"]), content, seed);
            if let Some(m) = f["structMember"].as_str() {
                upload = upload.in_struct(m);
                let others = i["otherStructMembers"].clone();
                post = post.point(s(&f["measurepointId"]), others);
            }
            post.files.push(upload);
        }
        let id: u32 = s(&i["id"]).parse().unwrap();
        let parts = e["parts"].as_array().unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&post.message(id, 0).unwrap()).unwrap(), parts[0]["json"], "{name}");
        let boundary = "enos-boundary-7f3a";
        let body = post.body(id, 0, boundary).unwrap();
        let target = HttpTarget::parse(s(&i["brokerUrl"])).unwrap();
        let topic = format!("/sys/{}/{}/thing/measurepoint/post", s(&i["productKey"]), s(&i["deviceKey"]));
        let r = target.multipart(&topic, s(&i["sessionId"]), boundary, body.clone());
        assert_eq!((r.method.as_str(), r.url(&target)), (s(&e["method"]), s(&e["url"]).to_owned()), "{name}");
        assert_eq!(r.content_type.as_deref(), Some(&*format!("multipart/form-data; boundary={boundary}")));
        // Split the body back into its parts: headers and bytes.
        let delimiter = format!("--{boundary}");
        let text = body.clone();
        let mut pieces = Vec::new();
        let mut rest = &text[..];
        while let Some(at) = rest.windows(delimiter.len()).position(|w| w == delimiter.as_bytes()) {
            pieces.push(&rest[..at]);
            rest = &rest[at + delimiter.len()..];
        }
        assert_eq!(rest, b"--\r\n", "{name}: the closing delimiter");
        let got: Vec<&[u8]> = pieces[1..].to_vec();
        assert_eq!(got.len(), parts.len(), "{name}");
        for (piece, want) in got.iter().zip(parts) {
            let piece = piece.strip_prefix(b"\r\n").unwrap().strip_suffix(b"\r\n").unwrap();
            let split = piece.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let head = String::from_utf8_lossy(&piece[..split]).into_owned();
            let bytes = &piece[split + 4..];
            for (k, value) in want["headers"].as_object().unwrap() {
                assert!(head.contains(&format!("{k}: {}", s(value))), "{name}: {k} in {head}");
            }
            match want["contentType"].as_str() {
                Some(ct) => assert!(head.contains(&format!("Content-Type: {ct}")), "{name}"),
                None => assert!(!head.contains("Content-Type"), "{name}"),
            }
            let want_bytes = match (want["bodyText"].as_str(), want["bodyHex"].as_str()) {
                (Some(t), _) => t.as_bytes().to_vec(),
                (None, Some(h)) => hex(h).to_vec(),
                _ => serde_json::to_vec(&want["json"]).unwrap(),
            };
            if want["json"].is_object() {
                assert_eq!(serde_json::from_slice::<Value>(bytes).unwrap(), want["json"], "{name}");
            } else {
                assert_eq!(bytes, &want_bytes[..], "{name}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// The firmware of an OTA upgrade (extensions spec E3, C14): the digest its command names,
/// fed in pieces, in any case; a byte changed, a byte missing or an unknown method refused.
#[test]
fn every_ota_firmware_vector() {
    use enos_proto::ops::{Firmware, FirmwareError};
    let mut checked = 0;
    for v in extensions().iter().filter(|v| v["kind"] == "ota_firmware") {
        let (name, e) = (s(&v["name"]), &v["expected"]);
        let fw: Firmware = serde_json::from_value(e["upgradeCommand"]["payload"]["params"].clone()).unwrap();
        let bytes = s(&v["inputs"]["firmwareText"]).as_bytes();
        let check = |fw: &Firmware, bytes: &[u8]| {
            let mut c = fw.check()?;
            for piece in bytes.chunks(7) {
                c.update(piece);
            }
            c.finish()
        };
        assert_eq!(check(&fw, bytes), Ok(()), "{name}");
        let upper = Firmware { sign: fw.sign.to_uppercase(), ..fw.clone() };
        assert_eq!(check(&upper, bytes), Ok(()), "{name}: any case");
        let mut changed = bytes.to_vec();
        changed[3] ^= 1;
        assert!(matches!(check(&fw, &changed), Err(FirmwareError::DigestMismatch { .. })), "{name}");
        assert!(
            matches!(check(&fw, &bytes[1..]), Err(FirmwareError::SizeMismatch { expected: 30, got: 29 })),
            "{name}"
        );
        let crc = Firmware { sign_method: "crc32".into(), ..fw.clone() };
        assert!(matches!(check(&crc, bytes), Err(FirmwareError::UnsupportedSignMethod(_))), "{name}");
        assert_eq!(fw.sign, s(&e[&fw.sign_method.to_ascii_lowercase()]), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// The extension vectors the tests above check, kind by kind (each test counts its own):
/// a vector added to the file fails here until a test takes it.
#[test]
fn every_extension_vector_has_a_test() {
    let mut kinds = BTreeMap::new();
    for v in extensions() {
        *kinds.entry(s(&v["kind"]).to_owned()).or_insert(0) += 1;
    }
    let checked: BTreeMap<String, i32> = [
        ("http_auth_sign", 3),   // every_http_request_vector
        ("http_request", 6),     // every_http_request_vector
        ("http_url_join", 1),    // every_http_request_vector
        ("http_command", 1),     // every_http_request_vector
        ("constants", 1),        // every_http_request_vector
        ("multipart", 2),        // every_multipart_vector
        ("ota_firmware", 2),     // every_ota_firmware_vector
        ("mqtt_connect", 4 + 3), // every_compressing_connect_vector, every_integration_channel_vector
        ("client_id_parse", 5),  // every_client_id_parse_vector
        ("message", 5 + 4),      // every_device_report_vector, every_integration_channel_vector
        ("raw_message", 1),      // every_integration_channel_vector
        ("downstream", 1),       // traffic_control_vector
        ("compression", 5),      // every_compression_vector
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(kinds, checked);
}
