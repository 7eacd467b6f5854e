//! `enos replay` against a real `enos-sim`: every row arrives once, refusals are counted
//! by code, and an interrupted replay goes on where it stopped without sending an
//! answered row again. What the cloud received is read back from its packet record.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use enos_sim::registry::defaults::*;
use serde_json::{json, Value};
use support::*;

const DEV: &str = "demo_pk/demo_device";
const T0: u64 = 1_600_000_000_000;

/// A CSV file of `rows` rows, one a second from `T0`, two points each.
fn csv(path: &Path, rows: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "time,temp,humidity").unwrap();
    for i in 0..rows {
        writeln!(f, "{},{:.1},{:.2}", T0 + i * 1000, 20.0 + (i % 100) as f64 / 10.0, 40.0 + (i % 50) as f64 / 4.0)
            .unwrap();
    }
}

/// Every measure point entry the cloud received in resumes for `device`'s connection:
/// (entry's device key or "", time) -> how many times.
fn received(sim: &Sim, device: &str) -> BTreeMap<(String, u64), u32> {
    let (ok, record) = sim.admin(&["record", device]);
    assert!(ok, "{record}");
    let mut seen = BTreeMap::new();
    for packet in record.as_array().unwrap() {
        let topic = packet["topic"].as_str().unwrap_or("");
        if packet["direction"] != "in" || !topic.contains("/thing/measurepoint/resume") {
            continue;
        }
        let payload: Value = serde_json::from_str(packet["payload"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("a recorded payload was cut ({e}): keep batches under 4 KiB"));
        let params = &payload["params"];
        let entries = if params.is_array() { params.as_array().unwrap().clone() } else { vec![params.clone()] };
        for e in entries {
            let key = (e["deviceKey"].as_str().unwrap_or("").to_owned(), e["time"].as_u64().unwrap());
            *seen.entry(key).or_insert(0) += 1;
        }
    }
    seen
}

fn figures(label: &str, summary: &Value) {
    println!(
        "{label}: {} rows sent in {} requests, {} accepted, {} ms, {} rows/s",
        summary["rows"]["sent"],
        summary["requests"],
        summary["rows"]["accepted"],
        summary["elapsedMs"],
        summary["rowsPerSecond"]
    );
}

#[test]
fn replay_of_100000_rows_arrives_whole_and_resumes_where_it_stopped() {
    let sim = Sim::start_with(&["--record", "20000"]);
    let home = TempDir::new("replay-100k");
    let env = device_env(&sim);
    let file = home.join("rows.csv");
    csv(&file, 100_000);
    let progress = home.join("rows.csv.enos-progress");
    let started = Instant::now();

    // Stopped after 30,000 rows, as an interruption would: exit 130, the checkpoint kept.
    let r = run(home.path(), &env, &["--json", "replay", "rows.csv", "--batch", "40", "--stop-after", "30000"]);
    assert_eq!(r.code, 130, "{r:?}");
    let first = r.json();
    figures("first run", &first);
    assert_eq!(
        (first["complete"].as_bool(), first["rows"]["sent"].as_u64(), first["rows"]["accepted"].as_u64()),
        (Some(false), Some(30_000), Some(30_000))
    );
    assert!(r.stderr.contains("--resume"), "{r:?}");
    let cp: Value = serde_json::from_str(&std::fs::read_to_string(&progress).unwrap()).unwrap();
    assert_eq!(
        (cp["rows"].as_u64(), cp["accepted"].as_u64(), cp["line"].as_u64()),
        (Some(30_000), Some(30_000), Some(30_001)),
        "{cp}"
    );

    // A checkpoint is never ignored silently.
    let r = run(home.path(), &env, &["replay", "rows.csv"]);
    assert!(r.code == 2 && r.stderr.contains("--resume") && r.stderr.contains("--restart"), "{r:?}");

    // Resumed: the other 70,000 rows, and the checkpoint goes once the replay is complete.
    let r = run(home.path(), &env, &["--json", "replay", "rows.csv", "--batch", "40", "--resume"]);
    assert_eq!(r.code, 0, "{r:?}");
    let second = r.json();
    figures("resumed run", &second);
    assert_eq!(second["complete"], true);
    assert_eq!(second["resumedFromLine"], 30_002);
    assert_eq!(second["rows"], json!({"sent": 70_000, "accepted": 70_000, "refused": 0, "unanswered": 0}));
    assert_eq!(second["total"]["accepted"], 100_000);
    assert!(!progress.exists());
    println!(
        "100,000 rows in {:.2} s in all (debug build, both runs, the rows checked first)",
        started.elapsed().as_secs_f64()
    );

    // The cloud received every row exactly once, with its time and values.
    let seen = received(&sim, DEV);
    assert_eq!(seen.len(), 100_000, "rows the cloud received");
    assert!(seen.values().all(|n| *n == 1), "a row was sent twice: {:?}", seen.iter().find(|(_, n)| **n > 1));
    let times: Vec<u64> = seen.keys().map(|(_, t)| *t).collect();
    assert_eq!((times[0], times[99_999]), (T0, T0 + 99_999 * 1000));
}

#[test]
fn refused_rows_are_counted_by_the_clouds_code() {
    let sim = Sim::start();
    let home = TempDir::new("replay-refused");
    let env = device_env(&sim);
    let mut text = String::from("time,temp\n");
    for i in 0..10u64 {
        let temp = if i == 5 { "\"hot\"".to_owned() } else { format!("{i}.5") };
        text.push_str(&format!("{},{temp}\n", T0 + i));
    }
    std::fs::write(home.join("rows.csv"), &text).unwrap();
    let r = run(home.path(), &env, &["--json", "replay", "rows.csv", "--batch", "2"]);
    assert_eq!(r.code, 1, "{r:?}");
    let s = r.json();
    assert_eq!(s["complete"], true);
    assert_eq!(s["rows"], json!({"sent": 10, "accepted": 8, "refused": 2, "unanswered": 0}));
    assert_eq!(s["refused"][0]["code"], 1204);
    assert_eq!(s["refused"][0]["rows"], 2);
    assert!(s["refused"][0]["message"].as_str().unwrap().contains("temp"), "{s}");
    // Text for a person says the same.
    let r = run(home.path(), &env, &["replay", "rows.csv", "--batch", "2"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("8 accepted, 2 refused") && r.stdout.contains("refused with code 1204: 2 rows"), "{r:?}");
    // With --skip-invalid the cloud drops the bad point and takes the rows.
    let r = run(home.path(), &env, &["--json", "replay", "rows.csv", "--batch", "2", "--skip-invalid"]);
    assert_eq!((r.code, r.json()["rows"]["accepted"].as_u64()), (0, Some(10)), "{r:?}");
}

#[test]
fn json_lines_of_a_gateways_sub_devices_go_in_batch_resumes() {
    let sim = Sim::start();
    let home = TempDir::new("replay-gateway");
    let env = gateway_env(&sim);
    let (sub1, sub2) = (format!("{SUB_PRODUCT}/{SUB_DEVICE_1}"), format!("{SUB_PRODUCT}/{SUB_DEVICE_2}"));
    assert_eq!(run(home.path(), &env, &["topo", "add", &sub1]).code, 0);
    // Two rows of the gateway, four of sub-device 1, then two of sub-device 2, which is
    // not in the gateway's topology: their batch is refused with 1212.
    let mut lines = Vec::new();
    for i in 0..2 {
        lines.push(json!({"time": T0 + i, "points": {"temp": 1.0}}));
    }
    for i in 0..4 {
        lines.push(json!({"time": format!("2020-09-13T12:26:4{i}Z"), "device": sub1, "points": {"temp": 2.0}}));
    }
    for i in 0..2 {
        lines.push(json!({"time": T0 + i, "device": sub2, "points": {"temp": 3.0}}));
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(home.join("rows.jsonl"), text).unwrap();
    let r = run(home.path(), &env, &["--json", "replay", "rows.jsonl", "--batch", "2", "--window", "1"]);
    assert_eq!(r.code, 1, "{r:?}");
    let s = r.json();
    assert_eq!(s["rows"], json!({"sent": 8, "accepted": 6, "refused": 2, "unanswered": 0}), "{s}");
    assert_eq!(s["refused"][0]["code"], 1212, "{s}");
    let seen = received(&sim, &format!("{GATEWAY_PRODUCT}/{GATEWAY}"));
    let of = |dk: &str| seen.keys().filter(|(d, _)| d == dk).count();
    assert_eq!((of(""), of(SUB_DEVICE_1), of(SUB_DEVICE_2)), (2, 4, 2));
    assert!(seen.contains_key(&(SUB_DEVICE_1.to_owned(), 1_600_000_000_000)), "{seen:?}");
}

#[test]
fn bad_rows_are_named_before_anything_is_sent() {
    let sim = Sim::start();
    let home = TempDir::new("replay-bad");
    let env = device_env(&sim);
    std::fs::write(home.join("rows.csv"), "time,temp\n1,1\n2,2\n\n3\n4,4\n").unwrap();
    let r = run(home.path(), &env, &["replay", "rows.csv"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("rows.csv:5: 1 fields, and the header has 2"), "{r:?}");
    let (_, record) = sim.admin(&["record", DEV]);
    assert_eq!(record, json!([]), "nothing was sent, not even a CONNECT");
    // --dry-run checks and counts without any setting.
    std::fs::write(home.join("ok.csv"), "time,temp\n1,1\n2,2\n").unwrap();
    let r = run(home.path(), &[], &["--json", "replay", "ok.csv", "--dry-run"]);
    assert_eq!((r.code, r.json()["rows"].as_u64()), (0, Some(2)), "{r:?}");
    let r = run(home.path(), &[], &["replay", "missing.csv"]);
    assert!(r.code == 5 && r.stderr.contains("missing.csv"), "{r:?}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_keeps_the_checkpoint_and_resume_sends_no_row_twice() {
    let sim = Sim::start_with(&["--record", "5000"]);
    let home = TempDir::new("replay-int");
    let env = device_env(&sim);
    csv(&home.join("rows.csv"), 4_000);
    let child = replay_started(home.path(), &env, &["--json", "replay", "rows.csv", "--batch", "50", "--rate", "1000"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let r = Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 130, "{r:?}");
    let first = r.json();
    let done = first["total"]["rows"].as_u64().unwrap();
    assert!(done > 0 && done < 4_000, "{first}");
    assert_eq!(first["rows"]["accepted"].as_u64(), Some(done), "every row sent was answered before the exit");
    let r = run(home.path(), &env, &["--json", "replay", "rows.csv", "--batch", "50", "--resume"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["rows"]["sent"].as_u64(), Some(4_000 - done));
    let seen = received(&sim, DEV);
    assert_eq!(seen.len(), 4_000);
    assert!(seen.values().all(|n| *n == 1), "a row was sent twice");
}

#[test]
fn a_cloud_that_goes_away_stops_the_replay_and_another_takes_the_rest() {
    let mut sim = Sim::start();
    let home = TempDir::new("replay-lost");
    let mut env = device_env(&sim);
    csv(&home.join("rows.csv"), 2_000);
    let progress = home.join("rows.csv.enos-progress");
    let child = replay_started(
        home.path(),
        &env,
        &["--json", "--timeout", "2", "replay", "rows.csv", "--batch", "20", "--rate", "1000"],
    );
    std::thread::sleep(Duration::from_millis(200));
    sim.kill();
    let r = Run::from(child.wait_with_output().unwrap());
    // No reply within the timeout: stopped, with what the cloud answered kept.
    assert_eq!(r.code, 4, "{r:?}");
    let s = r.json();
    assert_eq!(s["stopped"]["kind"], "timed_out", "{s}");
    assert_eq!(s["complete"], false);
    let done = s["total"]["rows"].as_u64().unwrap();
    assert!(done > 0 && done < 2_000, "{s}");
    assert!(progress.exists());

    // Another cloud (another URL, the same device) takes the rest, from the first row
    // the first one did not answer.
    let other = Sim::start_with(&["--record", "5000"]);
    env[0].1 = other.url.clone();
    let r = run(home.path(), &env, &["--json", "replay", "rows.csv", "--batch", "20", "--resume"]);
    assert_eq!(r.code, 0, "{r:?}");
    let seen = received(&other, DEV);
    assert_eq!(seen.len() as u64, 2_000 - done);
    assert_eq!(seen.keys().next().map(|(_, t)| *t), Some(T0 + done * 1000));
    assert!(!progress.exists());
}

#[test]
fn a_file_changed_before_its_checkpoint_is_not_resumed() {
    let sim = Sim::start();
    let home = TempDir::new("replay-changed");
    let env = device_env(&sim);
    let file = home.join("rows.csv");
    csv(&file, 100);
    let r = run(home.path(), &env, &["replay", "rows.csv", "--batch", "10", "--stop-after", "50"]);
    assert_eq!(r.code, 130, "{r:?}");
    // A row before the checkpoint edited, the file the same size: refused.
    let text = std::fs::read_to_string(&file).unwrap();
    let row = format!("{},", T0 + 10 * 1000);
    let edited = text.replacen(&format!("{row}21.0,"), &format!("{row}99.9,"), 1);
    assert_ne!(edited, text);
    assert_eq!(edited.len(), text.len());
    std::fs::write(&file, &edited).unwrap();
    let r = run(home.path(), &env, &["replay", "rows.csv", "--batch", "10", "--resume"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("are not what they were") && r.stderr.contains("--restart"), "{r:?}");
    // Put back, it resumes; a row after the checkpoint may change.
    let after = text.replacen(&format!("{},28.0,", T0 + 80 * 1000), &format!("{},88.8,", T0 + 80 * 1000), 1);
    assert_ne!(after, text);
    std::fs::write(&file, &after).unwrap();
    let r = run(home.path(), &env, &["--json", "replay", "rows.csv", "--batch", "10", "--resume"]);
    assert_eq!((r.code, r.json()["rows"]["sent"].as_u64()), (0, Some(50)), "{r:?}");
}

#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_replay_before_anything_is_sent() {
    let sim = Sim::start();
    let home = TempDir::new("replay-unwritable");
    let env = device_env(&sim);
    csv(&home.join("rows.csv"), 10);
    // Where the checkpoint's temporary file goes, a folder: it cannot be written, whoever
    // runs the test.
    std::fs::create_dir_all(home.join("rows.csv.enos-progress.tmp/x")).unwrap();
    let r = run(home.path(), &env, &["replay", "rows.csv"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stderr.contains("checkpoint"), "{r:?}");
    let (_, record) = sim.admin(&["record", DEV]);
    assert_eq!(record, json!([]), "something was sent, or a CONNECT");
    assert!(!home.join("rows.csv.enos-progress").exists());
}

#[test]
fn a_failed_connection_leaves_no_new_checkpoint() {
    let home = TempDir::new("replay-noconnect");
    let env = closed_port_env();
    csv(&home.join("rows.csv"), 10);
    let r = run(home.path(), &env, &["replay", "rows.csv"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(!home.join("rows.csv.enos-progress").exists());
    // So the next run needs neither --resume nor --restart.
    let r = run(home.path(), &env, &["replay", "rows.csv"]);
    assert_eq!(r.code, 3, "{r:?}");
}

/// `enos` run with `args` (a replay of `rows.csv` in `home`), once its checkpoint exists.
fn replay_started(home: &std::path::Path, env: &[(&str, String)], args: &[&str]) -> std::process::Child {
    let child = enos(home)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !home.join("rows.csv.enos-progress").exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
