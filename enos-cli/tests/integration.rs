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
