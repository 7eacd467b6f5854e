//! The binary: `serve`, then the subcommands a person runs from another terminal.

mod support;

use std::process::Command;

use enos_proto::ops::MeasurepointPost;
use enos_proto::CommandKind;
use enos_sim::registry::defaults::*;
use serde_json::{json, Value};
use support::*;

/// Runs a subcommand: (success, parsed JSON output).
fn run(admin: &str, args: &[&str]) -> (bool, Value) {
    let (ok, out, _) = run_with(admin, args, &[]);
    (ok, out)
}

/// Runs a subcommand with more environment: (success, parsed JSON output, standard error).
fn run_with(admin: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_enos-sim"))
        .arg("--admin")
        .arg(admin)
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime_dir())
        .env_remove("ENOS_SIM_TOKEN")
        .env_remove("ENOS_SIM_TOKEN_FILE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null), err)
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_then_inspect_and_command_from_another_terminal() {
    let sim = serve();
    let (mqtt, admin) = (sim.mqtt, sim.admin.clone());
    let mut d = TestDevice::connect(mqtt, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await.unwrap();
    d.call(MeasurepointPost::new(json!({"temp": 23.5}))).await.unwrap();
    let dev = format!("{DEVICE_PRODUCT}/{DEVICE}");

    let a = admin.clone();
    let (ok, devices) = tokio::task::spawn_blocking(move || run(&a, &["devices"])).await.unwrap();
    assert!(ok);
    assert!(devices.as_array().unwrap().iter().any(|d| d["deviceKey"] == DEVICE && d["online"] == true));

    let (a, dv) = (admin.clone(), dev.clone());
    let (ok, points) = tokio::task::spawn_blocking(move || run(&a, &["points", &dv])).await.unwrap();
    assert!(ok);
    assert_eq!(points["temp"]["value"], 23.5);

    // `invoke` waits for the device's reply.
    let (a, dv) = (admin.clone(), dev.clone());
    let invoke = tokio::task::spawn_blocking(move || {
        run(&a, &["invoke", "--device", &dv, "--service", "reset", r#"{"hard":true}"#])
    });
    let cmd = d.next_command().await;
    assert!(
        matches!(&cmd.kind, CommandKind::InvokeService { service_id, params } if service_id == "reset" && params["hard"] == true)
    );
    d.reply(cmd.reply_to.ok(&json!({"done": 1})).unwrap());
    let (ok, reply) = invoke.await.unwrap();
    assert!(ok);
    assert_eq!(reply, json!({"code": 200, "data": {"done": 1}, "message": null}));

    let (a, dv) = (admin.clone(), dev.clone());
    let set =
        tokio::task::spawn_blocking(move || run(&a, &["set-points", "--device", &dv, r#"{"temp_setpoint": 20}"#]));
    let cmd = d.next_command().await;
    assert!(matches!(&cmd.kind, CommandKind::SetMeasurepoints { .. }));
    d.reply(cmd.reply_to.ok_empty());
    assert!(set.await.unwrap().0);

    // An offline device, an unknown device, and a malformed argument fail clearly.
    let a = admin.clone();
    let other = format!("{DEVICE_PRODUCT}/{ACTIVATING_DEVICE}");
    let (ok, e) =
        tokio::task::spawn_blocking(move || run(&a, &["invoke", "--device", &other, "--service", "x"])).await.unwrap();
    assert!(!ok);
    assert!(e["error"].as_str().unwrap().contains("offline"));
    let a = admin.clone();
    let (ok, e) = tokio::task::spawn_blocking(move || run(&a, &["points", "nope/nope"])).await.unwrap();
    assert!(!ok);
    assert!(e["error"].as_str().unwrap().contains("no device"));
    let a = admin.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || run_with(&a, &["points", "not-a-pair"], &[])).await.unwrap();
    assert!(!ok);
    assert!(err.contains(r#""not-a-pair" is not pk/dk"#), "{err}");

    // The subcommands need the server's token: a wrong one is refused, a missing one named.
    let a = admin.clone();
    let (ok, e, _) =
        tokio::task::spawn_blocking(move || run_with(&a, &["devices"], &[("ENOS_SIM_TOKEN", "guess")])).await.unwrap();
    assert!(!ok);
    assert!(e["error"].as_str().unwrap().contains("token"), "{e}");
    let a = admin.clone();
    let elsewhere = runtime_dir().join("elsewhere");
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        run_with(&a, &["devices"], &[("XDG_RUNTIME_DIR", elsewhere.to_str().unwrap())])
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("no token for the admin API"), "{err}");
}

#[test]
fn the_token_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let sim = serve();
    let admin = sim.admin.clone();
    let port: std::net::SocketAddr = admin.parse().unwrap();
    let file = runtime_dir().join("enos-sim").join(format!("admin-{}.token", port.port()));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let dir_mode = std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o077, 0, "{dir_mode:o}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim().len(), 64);
}
