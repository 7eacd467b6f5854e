//! `enos integration` against a real `enos-sim`: one connection of the product's
//! integration channel posts measure points, events and attributes of several devices.

mod support;

use enos_sim::registry::defaults::*;
use serde_json::{json, Value};
use support::*;

/// The measure point history of device `dk` of the built-in device product.
fn history(sim: &Sim, dk: &str) -> Vec<Value> {
    let (ok, device) = sim.admin(&["device", &format!("{DEVICE_PRODUCT}/{dk}")]);
    assert!(ok, "{device}");
    device["history"].as_array().cloned().unwrap_or_default()
}

#[test]
fn one_post_reaches_the_cloud_for_two_devices() {
    // Two devices of the channel's product: demo_pk/load_0 and load_1.
    let sim = Sim::start_with(&["--fleet", "2"]);
    let home = TempDir::new("integration");
    let env = channel_env(&sim);
    let entries = json!([
        {"deviceKey": "load_0", "time": 1_700_000_000_000u64, "measurepoints": {"temp": 21.5}},
        {"deviceKey": "load_1", "time": "2024-05-01T12:00:00Z", "measurepoints": {"temp": 19.25, "humidity": 40}},
        {"deviceKey": "load_1", "time": 1_700_000_000_000u64, "events": {"overheat": {"level": 2, "msg": "hot"}}},
        {"deviceKey": "load_0", "attributes": {"capacity": 12.5}},
    ]);
    let r = run(home.path(), &env, &["integration", "post", &entries.to_string()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "measurepoints, 2 entries of load_0, load_1: ok (code 200)\n\
         events, 1 entry of load_1: ok (code 200)\n\
         attributes, 1 entry of load_0: ok (code 200)\n"
    );
    // The channel's measure points are history, at their times (as resumes are).
    assert_eq!(
        history(&sim, "load_0"),
        [json!({"kind": "resume", "point": "temp", "value": 21.5, "time": 1_700_000_000_000u64})]
    );
    assert_eq!(
        history(&sim, "load_1"),
        [
            json!({"kind": "resume", "point": "humidity", "value": 40, "time": 1_714_564_800_000u64}),
            json!({"kind": "resume", "point": "temp", "value": 19.25, "time": 1_714_564_800_000u64}),
        ]
    );
    let (_, device) = sim.admin(&["device", &format!("{DEVICE_PRODUCT}/load_1")]);
    assert_eq!(device["events"][0]["params"], json!({"level": 2, "msg": "hot"}), "{device}");
    let (_, device) = sim.admin(&["device", &format!("{DEVICE_PRODUCT}/load_0")]);
    assert_eq!(device["attributes"]["capacity"], 12.5, "{device}");

    // From a file of JSON lines, one request per entry.
    std::fs::write(
        home.join("entries.jsonl"),
        "{\"deviceKey\":\"load_0\",\"measurepoints\":{\"temp\":30}}\n{\"deviceKey\":\"load_1\",\"measurepoints\":{\"temp\":31}}\n",
    )
    .unwrap();
    let r = run(home.path(), &env, &["--json", "integration", "post", "entries.jsonl", "--batch", "1"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["requests"].as_array().unwrap().len(), 2, "{r:?}");
    assert_eq!(history(&sim, "load_1").last().map(|h| h["value"].clone()), Some(json!(31)));

    // A device the product does not have: that request is refused (exit 1), the others go.
    let entries = json!([
        {"deviceKey": "nobody", "measurepoints": {"temp": 1}},
        {"deviceKey": "load_0", "events": {"overheat": {"level": 3, "msg": "hotter"}}},
    ]);
    let r = run(home.path(), &env, &["--json", "integration", "post", &entries.to_string()]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc = r.json();
    assert_eq!((doc["refused"].as_u64(), doc["requests"][0]["code"].as_i64()), (Some(1), Some(1257)), "{doc}");
    assert_eq!(doc["requests"][1]["code"], 200, "{doc}");
    let (_, device) = sim.admin(&["device", &format!("{DEVICE_PRODUCT}/load_0")]);
    assert_eq!(device["events"][0]["params"]["level"], 3, "{device}");

    // Raw bytes on the channel: the cloud's raw reply.
    let r = run(home.path(), &env, &["integration", "raw", "0a0b"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "0a0b\n"), "{r:?}");
}

#[test]
fn the_channel_needs_the_product_secret_and_checks_entries_first() {
    let sim = Sim::start();
    let home = TempDir::new("integration-errors");
    let one = r#"{"deviceKey":"demo_device","measurepoints":{"temp":1}}"#;
    // No product secret: named with its three ways (a device's settings do not stand in).
    let mut env = device_env(&sim);
    let r = run(home.path(), &env, &["integration", "post", one]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("the product secret") && r.stderr.contains("ENOS_PRODUCT_SECRET"), "{r:?}");
    // A wrong one: refused (exit 3), and never printed.
    env.push(("ENOS_PRODUCT_SECRET", "wrong-channel-secret".into()));
    let r = run(home.path(), &env, &["-v", "integration", "post", one]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("check the product key and the product secret, integration channel"), "{r:?}");
    assert!(!r.all().contains("wrong-channel-secret"), "{r:?}");
    // The right one, with the device's own settings left over: the device key is not used.
    env.pop();
    env.push(("ENOS_PRODUCT_SECRET", DEVICE_PRODUCT_SECRET.into()));
    let r = run(home.path(), &env, &["-v", "integration", "post", one]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("as {DEVICE_PRODUCT}/%channel%")), "{r:?}");
    // Bad entries are named before anything connects.
    let r = run(
        home.path(),
        &channel_env(&sim),
        &["integration", "post", r#"[{"deviceKey":"d","measurepoints":{}},{"events":{}}]"#],
    );
    assert!(r.code == 2 && r.stderr.contains("entries: entry 2: no deviceKey"), "{r:?}");
    let r = run(home.path(), &channel_env(&sim), &["--as", "pk/dk", "integration", "post", one]);
    assert!(r.code == 2 && r.stderr.contains("--as does not apply"), "{r:?}");
}

#[cfg(unix)]
#[test]
fn each_request_is_printed_as_it_is_answered_and_ctrl_c_stops_after_the_one_in_flight() {
    use std::io::{BufRead, BufReader, Read};
    let sim = Sim::start_with(&["--fleet", "1"]);
    let home = TempDir::new("integration-stream");
    let entries: Vec<Value> = (0..20_000u64)
        .map(|i| json!({"deviceKey": "load_0", "time": 1_700_000_000_000u64 + i, "measurepoints": {"temp": 1}}))
        .collect();
    std::fs::write(home.join("entries.json"), Value::Array(entries).to_string()).unwrap();
    let mut child = enos(home.path())
        .envs(channel_env(&sim).iter().map(|(k, v)| (*k, v.as_str())))
        .args(["integration", "post", "entries.json", "--batch", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // The first request's line comes while the others are still going.
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("measurepoints, 1 entry of load_0: ok (code 200)"), "{first:?}");
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130), "{err}");
    let printed = 1 + rest.lines().count();
    assert!(printed < 20_000, "not stopped: {printed} requests");
    assert!(err.contains(&format!("interrupted: {printed} of 20000 requests sent, the rest not")), "{printed}: {err}");
}

#[test]
fn a_lost_cloud_stops_the_post_after_printing_what_was_answered() {
    let mut sim = Sim::start_with(&["--fleet", "1"]);
    let home = TempDir::new("integration-lost");
    let entries: Vec<Value> = (0..20_000u64)
        .map(|i| json!({"deviceKey": "load_0", "time": 1_700_000_000_000u64 + i, "measurepoints": {"temp": 1}}))
        .collect();
    std::fs::write(home.join("entries.json"), Value::Array(entries).to_string()).unwrap();
    let child = enos(home.path())
        .envs(channel_env(&sim).iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--json", "--timeout", "2", "integration", "post", "entries.json", "--batch", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    sim.kill();
    let r = Run::from(child.wait_with_output().unwrap());
    assert!(r.code == 3 || r.code == 4, "{r:?}");
    // The requests answered, in one document, then the error's.
    let docs: Vec<Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(docs.len(), 2, "{r:?}");
    let answered = docs[0]["requests"].as_array().unwrap().len();
    assert!(answered > 0 && answered < 20_000 && docs[0]["complete"] == false, "{}", docs[0]);
    assert!(docs[1]["error"]["kind"].is_string(), "{}", docs[1]);
}
