//! `enos listen` against a real `enos-sim`: the cloud invokes, `enos` answers (fixed
//! answers, a program, the default) and prints each command as one JSON line.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use enos_sim::registry::defaults::*;
use serde_json::{json, Value};
use support::*;

const DEV: &str = "demo_pk/demo_device";

/// A running `enos listen`, killed when dropped.
struct Listening {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Listening {
    /// Starts it and waits until it says it listens.
    fn start(home: &TempDir, env: &[(&str, String)], args: &[&str]) -> Self {
        let mut child = enos(home.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("listen")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.contains("listening as") => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!("enos listen did not start: {seen:?}"),
            }
        }
        Listening { child, stderr: rx }
    }

    /// Waits for its end: (exit code, its standard output as JSON lines, the rest of its
    /// standard error).
    fn finish(mut self) -> (i32, Vec<Value>, String) {
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        let lines = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        let err: Vec<String> = self.stderr.try_iter().collect();
        (code, lines, err.join("\n"))
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fixed_answers_and_the_default_reply() {
    let sim = Sim::start();
    let home = TempDir::new("listen-fixed");
    let l = Listening::start(
        &home,
        &device_env(&sim),
        &[
            "--answer",
            r#"service=reset:{"done":true}"#,
            "--answer",
            "service=restart:error=2001:busy now",
            "--count",
            "3",
        ],
    );
    let (ok, reply) = sim.admin(&["invoke", "--device", DEV, "--service", "reset", r#"{"hard":true}"#]);
    assert!(ok, "{reply}");
    assert_eq!(reply, json!({"code": 200, "data": {"done": true}, "message": null}));
    let (_, reply) = sim.admin(&["invoke", "--device", DEV, "--service", "restart", r#"{"delay":1}"#]);
    assert_eq!((reply["code"].as_i64(), reply["message"].as_str()), (Some(2001), Some("busy now")), "{reply}");
    // Nothing answers a measure point set: the SDK's default, 1101.
    let (_, reply) = sim.admin(&["set-points", "--device", DEV, r#"{"temp_setpoint":20}"#]);
    assert_eq!(reply["code"], 1101, "{reply}");
    let (code, lines, _) = l.finish();
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["kind"], "service");
    assert_eq!(lines[0]["service"], "reset");
    assert_eq!(lines[0]["device"], DEV);
    assert_eq!(lines[0]["params"], json!({"hard": true}));
    assert_eq!(lines[0]["reply"], json!({"code": 200, "data": {"done": true}}));
    assert_eq!(lines[1]["reply"], json!({"code": 2001, "message": "busy now"}));
    assert_eq!(lines[2]["kind"], "set");
    assert_eq!(lines[2]["points"], json!({"temp_setpoint": 20}));
    assert_eq!(lines[2]["reply"]["code"], 1101);
}

#[cfg(unix)]
#[test]
fn a_program_answers_and_its_failures_become_error_replies() {
    use std::os::unix::fs::PermissionsExt;
    let sim = Sim::start();
    let home = TempDir::new("listen-exec");
    let handler = home.join("handler.sh");
    std::fs::write(
        &handler,
        r#"#!/bin/sh
read cmd
case "$cmd" in
  *'"service":"restart"'*) echo "boom: cannot restart now" >&2; exit 3 ;;
  *'"kind":"set"'*) echo "this is not JSON" ;;
  *'"kind":"raw"'*) echo 0c0d ;;
  *) printf '{"got":%s}\n' "$cmd" ;;
esac
"#,
    )
    .unwrap();
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).unwrap();
    let l = Listening::start(&home, &device_env(&sim), &["--exec", handler.to_str().unwrap(), "--count", "4"]);
    // The program gets the command as JSON and its output is the reply's data.
    let (_, reply) = sim.admin(&["invoke", "--device", DEV, "--service", "reset", r#"{"hard":true}"#]);
    assert_eq!(reply["code"], 200, "{reply}");
    let got = &reply["data"]["got"];
    assert_eq!(
        (got["kind"].as_str(), got["service"].as_str(), got["device"].as_str()),
        (Some("service"), Some("reset"), Some(DEV))
    );
    assert_eq!(got["params"], json!({"hard": true}));
    // A non-zero exit: 1102 with the program's last line of standard error.
    let (_, reply) = sim.admin(&["invoke", "--device", DEV, "--service", "restart"]);
    assert_eq!(reply["code"], 1102, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("exited with status 3: boom: cannot restart now"), "{message}");
    // Output that is not JSON: 1102 saying so.
    let (_, reply) = sim.admin(&["set-points", "--device", DEV, r#"{"temp_setpoint":20}"#]);
    assert_eq!(reply["code"], 1102, "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("printed no JSON answer"), "{reply}");
    // Raw down: the program's hex is the raw reply.
    let (ok, reply) = sim.admin(&["raw", "--device", DEV, "0a0b"]);
    assert!(ok, "{reply}");
    assert_eq!(reply["reply"], "0c0d");
    let (code, lines, _) = l.finish();
    assert_eq!(code, 0);
    assert_eq!(
        lines.iter().map(|l| l["reply"]["code"].as_i64()).collect::<Vec<_>>(),
        [Some(200), Some(1102), Some(1102), None]
    );
    assert_eq!(lines[3]["hex"], "0a0b");
    assert_eq!(lines[3]["reply"]["hex"], "0c0d");
}

#[cfg(unix)]
#[test]
fn ctrl_c_ends_listen_cleanly() {
    let sim = Sim::start();
    let home = TempDir::new("listen-int");
    let l = Listening::start(&home, &device_env(&sim), &[]);
    let status = std::process::Command::new("kill").args(["-INT", &l.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let (code, lines, _) = l.finish();
    assert_eq!((code, lines.len()), (0, 0));
}

#[test]
fn a_gateway_listens_for_its_sub_devices_too() {
    let sim = Sim::start();
    let home = TempDir::new("listen-gw");
    let env = gateway_env(&sim);
    let sub = format!("{SUB_PRODUCT}/{SUB_DEVICE_1}");
    let r = run(home.path(), &env, &["topo", "add", &sub]);
    assert_eq!(r.code, 0, "{r:?}");
    let l =
        Listening::start(&home, &env, &["--sub", &sub, "--answer", r#"service=*:{"by":"gateway"}"#, "--count", "1"]);
    let (_, reply) = sim.admin(&["invoke", "--device", &sub, "--service", "reset"]);
    assert_eq!(reply["data"], json!({"by": "gateway"}), "{reply}");
    let (code, lines, _) = l.finish();
    assert_eq!(code, 0);
    assert_eq!(lines[0]["device"], sub.as_str());
}

#[test]
fn a_program_not_on_path_is_found_missing_at_the_start() {
    let home = TempDir::new("listen-path");
    // Nothing listens there: the program is looked for before anything connects.
    let env = vec![
        ("ENOS_URL", "tcp://127.0.0.1:1".to_owned()),
        ("ENOS_PRODUCT_KEY", "pk".into()),
        ("ENOS_DEVICE_KEY", "dk".into()),
        ("ENOS_DEVICE_SECRET", "s".into()),
    ];
    let r = run(home.path(), &env, &["listen", "--exec", "no-such-enos-handler"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stderr.contains("--exec no-such-enos-handler: no such program on PATH"), "{r:?}");
    for bad in [&["listen", "--exec-timeout", "0"][..], &["listen", "--count", "0"]] {
        assert_eq!(run(home.path(), &env, bad).code, 2, "{bad:?}");
    }
}

#[test]
fn listen_ends_when_nobody_reads_its_output() {
    let sim = Sim::start();
    let home = TempDir::new("listen-closed");
    let mut l = Listening::start(&home, &device_env(&sim), &["--answer", r#"service=*:{"ok":true}"#]);
    let mut lines = BufReader::new(l.child.stdout.take().unwrap()).lines();
    let (_, reply) = sim.admin(&["invoke", "--device", DEV, "--service", "reset"]);
    assert_eq!(reply["code"], 200, "{reply}");
    assert!(lines.next().unwrap().unwrap().contains("\"reset\""));
    // As `enos listen | head -1` does: the reader goes away.
    drop(lines);
    let (_, reply) = sim.admin(&["invoke", "--device", DEV, "--service", "again"]);
    assert_eq!(reply["code"], 200, "the command is still answered: {reply}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = l.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "listen went on with nobody reading");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
