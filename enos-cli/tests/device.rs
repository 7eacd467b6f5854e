//! The one-shot subcommands of the real `enos` binary against a real `enos-sim`: what
//! they send arrives, what they print, and how each way of failing exits.

mod support;

use enos_sim::registry::defaults::*;
use serde_json::json;
use support::*;

const DEV: &str = "demo_pk/demo_device";

#[test]
fn a_post_arrives_in_the_cloud_with_its_time() {
    let sim = Sim::start();
    let home = TempDir::new("post");
    let env = device_env(&sim);
    let r = run(home.path(), &env, &["post", r#"{"temp":21.5}"#, "--at", "2024-05-01T12:00:00Z"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "ok (code 200)"), "{r:?}");
    let points = sim.points(DEV);
    assert_eq!(points["temp"], json!({"value": 21.5, "time": 1_714_564_800_000u64}));

    // --json: the reply as one document; --qos 0 too.
    let r = run(home.path(), &env, &["--json", "--qos", "0", "post", r#"{"humidity":40}"#]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["code"], 200);
    assert_eq!(sim.points(DEV)["humidity"]["value"], 40);
}

#[test]
fn a_refusal_exits_1_with_the_clouds_code() {
    let sim = Sim::start();
    let home = TempDir::new("refused");
    let env = device_env(&sim);
    let r = run(home.path(), &env, &["post", r#"{"no_such_point":1}"#]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cloud refused with code 1204"), "{r:?}");
    let r = run(home.path(), &env, &["--json", "post", r#"{"no_such_point":1}"#]);
    assert_eq!(r.code, 1, "{r:?}");
    let e = r.json();
    assert_eq!(
        (e["error"]["code"].as_i64(), e["error"]["kind"].as_str(), e["error"]["exit"].as_i64()),
        (Some(1204), Some("refused"), Some(1))
    );
}

#[test]
fn wrong_credentials_exit_3_and_the_secret_is_never_printed() {
    let sim = Sim::start();
    let home = TempDir::new("wrong");
    let mut env = device_env(&sim);
    env.retain(|(k, _)| *k != "ENOS_DEVICE_SECRET");
    let secret = "hunter2-wrong-secret";
    env.push(("ENOS_DEVICE_SECRET", secret.into()));
    for args in [&["post", "{}"][..], &["-v", "post", "{}"], &["-vv", "--json", "connect"]] {
        let r = run(home.path(), &env, args);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(r.stderr.contains("not authorized"), "{r:?}");
        assert!(r.stderr.contains("check the device keys and the device secret (from ENOS_DEVICE_SECRET)"), "{r:?}");
        assert!(!r.all().contains(secret), "the secret was printed: {r:?}");
    }
    // The secret flag is never echoed either.
    let r = run(home.path(), &env, &["-v", "--device-secret", "flag-secret-123", "connect"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("device secret: set (from --device-secret)") && !r.all().contains("flag-secret-123"),
        "{r:?}"
    );
    // Nor in --help: nothing is taken from the environment there.
    let r = run(home.path(), &env, &["--help"]);
    assert_eq!(r.code, 0);
    assert!(!r.all().contains(secret) && r.stdout.contains("Exit codes"), "{r:?}");
}

#[test]
fn an_unreachable_or_silent_broker_exits_3_or_4() {
    let home = TempDir::new("unreachable");
    // A port nobody listens on: refused at once.
    let env = closed_port_env();
    let r = run(home.path(), &env, &["connect"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("check the URL"), "{r:?}");
    // A broker that accepts and never answers: no connection within the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let conn = silent.accept();
        std::thread::sleep(std::time::Duration::from_secs(3));
        drop(conn);
    });
    let mut env = env;
    env[0].1 = format!("tcp://{addr}");
    let r = run(home.path(), &env, &["--connect-timeout", "1", "post", "{}"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("no connection to"), "{r:?}");
    drop(held);
}

#[test]
fn missing_settings_and_bad_input_exit_2_saying_what_and_how() {
    let home = TempDir::new("usage");
    let r = run(home.path(), &[], &["post", "{}"]);
    assert_eq!(r.code, 2, "{r:?}");
    for part in ["missing setting: the broker URL", "--url", "ENOS_URL", "`url` in a profile"] {
        assert!(r.stderr.contains(part), "{part}: {r:?}");
    }
    let env = vec![("ENOS_URL", "tcp://127.0.0.1:1".to_owned()), ("ENOS_PRODUCT_KEY", "pk".into())];
    let r = run(home.path(), &env, &["post", "{}"]);
    assert!(r.code == 2 && r.stderr.contains("the device key; give it with --device-key, ENOS_DEVICE_KEY"), "{r:?}");
    let env = vec![
        ("ENOS_URL", "tcp://127.0.0.1:1".to_owned()),
        ("ENOS_PRODUCT_KEY", "pk".into()),
        ("ENOS_DEVICE_KEY", "dk".into()),
    ];
    let r = run(home.path(), &env, &["connect"]);
    assert!(
        r.code == 2 && r.stderr.contains("the device's credentials") && r.stderr.contains("ENOS_PRODUCT_SECRET"),
        "{r:?}"
    );

    // Bad input is refused before anything connects (there is nothing at this URL).
    for (args, what) in [
        (&["post", r#"{"temp":"#][..], "points: not JSON"),
        (&["post", "[1]"], "points: expected a JSON object"),
        (&["post", "{}", "--at", "yesterday"], "--at: \"yesterday\" is neither"),
        (&["raw", "0a0g"], "hex: 'g' at position 4 is not a hex digit"),
        (&["raw", "abc"], "3 hex digits"),
        (&["tag", "update", "novalue"], "\"novalue\" is not key=value"),
        (&["--as", "nokeys", "post", "{}"], "--as: \"nokeys\" is not pk/dk"),
        (&["listen", "--answer", "service=reset"], "expected service=ID:REPLY"),
        (&["--qos", "2", "post", "{}"], "2 is not in 0..=1"),
    ] {
        let r = run(home.path(), &env, args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(what), "{args:?}: {r:?}");
    }
    let r = run(home.path(), &env, &["--json", "raw", "zz"]);
    assert_eq!(r.json()["error"]["kind"], "bad_input");
}

#[test]
fn flags_beat_the_environment_which_beats_the_profile() {
    let sim = Sim::start();
    let home = TempDir::new("profile");
    let config = home.join(".config/enos");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("profiles.toml"),
        format!(
            "[lab]\nurl = \"{}\"\nproduct_key = \"{DEVICE_PRODUCT}\"\ndevice_key = \"{DEVICE}\"\ndevice_secret = \"wrong-in-profile\"\n\n[good]\nurl = \"{}\"\nproduct_key = \"{DEVICE_PRODUCT}\"\ndevice_key = \"{DEVICE}\"\ndevice_secret = \"{DEVICE_SECRET}\"\n",
            sim.url, sim.url
        ),
    )
    .unwrap();
    let lab = vec![("ENOS_PROFILE", "lab".to_owned())];
    // The profile alone: its wrong secret is refused, and never printed.
    let r = run(home.path(), &lab, &["-v", "connect"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("device secret: set (from `device_secret` of profile lab)"), "{r:?}");
    assert!(!r.all().contains("wrong-in-profile"), "{r:?}");
    // The environment beats the profile.
    let mut env = lab.clone();
    env.push(("ENOS_DEVICE_SECRET", DEVICE_SECRET.into()));
    let r = run(home.path(), &env, &["-v", "connect"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("url = {} (from `url` of profile lab)", sim.url)), "{r:?}");
    assert!(r.stderr.contains("device secret: set (from ENOS_DEVICE_SECRET)"), "{r:?}");
    // A flag beats the environment.
    let r = run(home.path(), &env, &["--device-secret", "wrong-flag", "connect"]);
    assert_eq!(r.code, 3, "{r:?}");
    // --profile beats ENOS_PROFILE; an unknown profile is named with those there are.
    let r = run(home.path(), &lab, &["--profile", "good", "post", r#"{"temp":3}"#]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(home.path(), &lab, &["--profile", "nope", "connect"]);
    assert!(
        r.code == 2 && r.stderr.contains("profile nope (from --profile) is not in") && r.stderr.contains("good, lab"),
        "{r:?}"
    );
    // ENOS_CONFIG names another file.
    let other = home.join("other.toml");
    std::fs::write(&other, format!("[default]\nurl = \"{}\"\nproduct_key = \"{DEVICE_PRODUCT}\"\ndevice_key = \"{DEVICE}\"\ndevice_secret = \"{DEVICE_SECRET}\"\n", sim.url)).unwrap();
    let r = run(home.path(), &[("ENOS_CONFIG", other.display().to_string())], &["--json", "connect"]);
    assert_eq!((r.code, r.json()["connected"].as_bool()), (0, Some(true)), "{r:?}");
    // A typo in the file is named.
    std::fs::write(&other, "[default]\nurll = \"x\"\n").unwrap();
    let r = run(home.path(), &[("ENOS_CONFIG", other.display().to_string())], &["connect"]);
    assert!(r.code == 2 && r.stderr.contains("unknown field `urll`"), "{r:?}");
}

#[test]
fn dynamic_activation_keeps_the_issued_secret_and_uses_it_next_time() {
    let sim = Sim::start();
    let home = TempDir::new("activation");
    let env = vec![
        ("ENOS_URL", sim.url.clone()),
        ("ENOS_PRODUCT_KEY", DEVICE_PRODUCT.into()),
        ("ENOS_DEVICE_KEY", ACTIVATING_DEVICE.into()),
        ("ENOS_PRODUCT_SECRET", DEVICE_PRODUCT_SECRET.into()),
    ];
    let r = run(home.path(), &env, &["-v", "post", r#"{"temp":7}"#]);
    assert_eq!(r.code, 0, "{r:?}");
    let file = home.join(&format!(".config/enos/secrets/{DEVICE_PRODUCT}/{ACTIVATING_DEVICE}.secret"));
    let issued = std::fs::read_to_string(&file).unwrap();
    let issued = issued.trim();
    assert!(issued.len() >= 8, "{issued:?}");
    assert!(!r.all().contains(issued) && !r.all().contains(DEVICE_PRODUCT_SECRET), "a secret was printed: {r:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (_, device) = sim.admin(&["device", &format!("{DEVICE_PRODUCT}/{ACTIVATING_DEVICE}")]);
    assert_eq!(device["activated"], true, "{device}");
    // The next run signs in with the kept secret (the cloud would refuse a second activation).
    let r = run(home.path(), &env, &["-v", "post", r#"{"temp":8}"#]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("device secret (from the secret kept in"), "{r:?}");
    assert_eq!(sim.points(&format!("{DEVICE_PRODUCT}/{ACTIVATING_DEVICE}"))["temp"]["value"], 8);
}

fn p12(cert: &enos_sim::pki::CertPem, passphrase: &str) -> Vec<u8> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let der = cert.identity().unwrap().certificates()[0].to_vec();
    let chain = PrivateKeyChain::new(
        b"k".to_vec(),
        PrivateKey::from_der(&cert.key_der).unwrap(),
        vec![Certificate::from_der(&der).unwrap()],
    );
    let mut store = KeyStore::new();
    store.add_entry("device", KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(passphrase).write().unwrap()
}

#[test]
fn x509_client_certificates_over_tls_as_pem_and_pkcs12() {
    let home = TempDir::new("tls");
    let (ca, devices) = (enos_sim::pki::Ca::new("cloud ca").unwrap(), enos_sim::pki::Ca::new("device ca").unwrap());
    let server = ca.server_cert().unwrap();
    let device = devices.device_cert(DEVICE).unwrap();
    let write = |name: &str, text: &[u8]| {
        let p = home.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (server_pem, server_key) =
        (write("server.pem", server.cert.as_bytes()), write("server.key", server.key.as_bytes()));
    let devices_ca = write("devices-ca.pem", devices.pem.as_bytes());
    let ca_pem = write("ca.pem", ca.pem.as_bytes());
    let other_ca = write("other-ca.pem", enos_sim::pki::Ca::new("other").unwrap().pem.as_bytes());
    let cert = write("device.pem", device.cert.as_bytes());
    let key = write("device.key", device.key.as_bytes());
    let pfx = write("device.p12", &p12(&device, "pass phrase"));
    let sim = Sim::start_with(&[
        "--tls",
        "127.0.0.1:0",
        "--cert",
        &server_pem,
        "--key",
        &server_key,
        "--client-ca",
        &devices_ca,
    ]);
    let tls = sim.tls_url.clone().unwrap();
    let base = vec![
        ("ENOS_URL", tls.clone()),
        ("ENOS_PRODUCT_KEY", DEVICE_PRODUCT.into()),
        ("ENOS_DEVICE_KEY", DEVICE.into()),
        ("ENOS_CA", ca_pem.clone()),
    ];
    // PEM certificate and key, no secret at all.
    let r = run(home.path(), &base, &["-v", "--cert", &cert, "--key", &key, "post", r#"{"temp":31}"#]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("with the client certificate (from --cert)"), "{r:?}");
    assert_eq!(sim.points(DEV)["temp"]["value"], 31);
    // PKCS#12 with its passphrase, from the environment.
    let mut env = base.clone();
    env.push(("ENOS_PFX", pfx.clone()));
    env.push(("ENOS_PASSPHRASE", "pass phrase".into()));
    let r = run(home.path(), &env, &["post", r#"{"temp":32}"#]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sim.points(DEV)["temp"]["value"], 32);
    // A wrong passphrase is a usage error naming pfx, and is not printed.
    env.last_mut().unwrap().1 = "wrong phrase".into();
    let r = run(home.path(), &env, &["connect"]);
    assert!(r.code == 2 && r.stderr.contains("pfx") && !r.all().contains("wrong phrase"), "{r:?}");
    // A CA that did not sign the broker: the TLS handshake fails, exit 3.
    let r = run(home.path(), &base, &["--cert", &cert, "--key", &key, "--ca", &other_ca, "connect"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("tls") && r.stderr.contains("check the CA"), "{r:?}");
    // A CA file that does not exist: an I/O error naming it.
    let r = run(home.path(), &base, &["--cert", &cert, "--key", &key, "--ca", "/nonexistent/ca.pem", "connect"]);
    assert!(r.code == 5 && r.stderr.contains("CA file /nonexistent/ca.pem (from --ca)"), "{r:?}");
}

#[test]
fn tags_attributes_events_raw_ota_tsl_log_network() {
    let sim = Sim::start();
    let home = TempDir::new("ops");
    let env = device_env(&sim);
    let ok = |args: &[&str]| {
        let r = run(home.path(), &env, args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        r
    };
    ok(&["tag", "update", "site=lab", "floor=2"]);
    assert_eq!(ok(&["tag", "get"]).stdout, "floor = 2\nsite = lab\n");
    ok(&["tag", "delete", "floor"]);
    assert_eq!(ok(&["--json", "tag", "get"]).json()["data"], json!({"site": "lab"}));
    ok(&["attribute", "update", r#"{"capacity":12.5,"name":"pump"}"#]);
    assert_eq!(ok(&["attribute", "get", "capacity"]).stdout, "capacity = 12.5\n");
    ok(&["event", "overheat", r#"{"level":2,"msg":"hot"}"#]);
    let (_, device) = sim.admin(&["device", DEV]);
    assert_eq!(device["events"][0]["event"], "overheat", "{device}");
    assert_eq!(ok(&["raw", "0x0a 0b"]).stdout, "0a0b\n");
    assert!(ok(&["ota", "firmwares"]).stdout.starts_with("1.1.0  md5"));
    ok(&["ota", "version", "1.0.3"]);
    let (_, device) = sim.admin(&["device", DEV]);
    assert_eq!(device["firmwareVersion"], "1.0.3");
    assert!(ok(&["tsl"]).stdout.contains("measurepoints: branchCurr (ARRAY)"));
    assert_eq!(ok(&["--json", "tsl"]).json()["data"]["tslMeasurepointMap"]["temp"]["dataType"], "FLOAT");
    ok(&["log", "pump started", "--level", "info", "--module", "pump"]);
    ok(&["network", "--rssi", "-67.5", "--type", "4G"]);
    let (_, device) = sim.admin(&["device", DEV]);
    let methods: Vec<&str> =
        device["reports"].as_array().unwrap().iter().filter_map(|r| r["method"].as_str()).collect();
    assert_eq!(methods, ["thing.log.post", "network.status.report"], "{device}");
    ok(&["resume", r#"{"temp":1.5}"#, "--at", "1600000000000"]);
    // An OTA progress without a task is the cloud's refusal.
    let r = run(home.path(), &env, &["ota", "progress", "50", "downloading"]);
    assert!(r.code == 1 && r.stderr.contains("764"), "{r:?}");
}

#[test]
fn a_gateway_manages_its_sub_devices_and_acts_as_one() {
    let sim = Sim::start();
    let home = TempDir::new("gateway");
    let env = gateway_env(&sim);
    let (sub1, sub2) = (format!("{SUB_PRODUCT}/{SUB_DEVICE_1}"), format!("{SUB_PRODUCT}/{SUB_DEVICE_2}"));
    let ok = |args: &[&str]| {
        let r = run(home.path(), &env, args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        r
    };
    ok(&["topo", "add", &sub1, &sub2]);
    let topo = ok(&["--json", "topo", "get"]).json();
    let listed: Vec<&str> = topo["data"].as_array().unwrap().iter().filter_map(|e| e["deviceKey"].as_str()).collect();
    assert_eq!(listed.len(), 2, "{topo}");
    // --as logs the sub-device in first, then posts as it.
    ok(&["--as", &sub1, "post", r#"{"temp":19}"#]);
    assert_eq!(sim.points(&sub1)["temp"]["value"], 19);
    let login = ok(&["login", &sub1, &sub2]).stdout;
    assert_eq!(login.lines().filter(|l| l.starts_with("logged in demo_sub_pk/")).count(), 2, "{login}");
    ok(&["logout", &sub1]);
    // Gateway-only operations cannot be sent as a sub-device.
    let r = run(home.path(), &env, &["--as", &sub1, "topo", "get"]);
    assert!(r.code == 2 && r.stderr.contains("--as does not apply"), "{r:?}");
    // A sub-device with no secret anywhere: named, with the ways to give one.
    let r = run(
        home.path(),
        &[env[0].clone(), env[1].clone(), env[2].clone(), env[3].clone()],
        &["--as", &sub1, "post", "{}"],
    );
    assert!(
        r.code == 2
            && r.stderr.contains(&format!("the secret of sub-device {sub1}"))
            && r.stderr.contains("ENOS_SUB_SECRETS"),
        "{r:?}"
    );
    ok(&["topo", "delete", &sub2]);
    assert_eq!(ok(&["--json", "topo", "get"]).json()["data"].as_array().unwrap().len(), 1);

    // Registration: the secret is kept, never printed, and used by later commands.
    let r = ok(&["--json", "register", &format!("{SUB_PRODUCT}/pump3"), "--name", "pump 3"]);
    let file = r.json()["data"][0]["secretFile"].as_str().unwrap().to_owned();
    let secret = std::fs::read_to_string(&file).unwrap();
    assert!(!r.all().contains(secret.trim()), "{r:?}");
    let pump = format!("{SUB_PRODUCT}/pump3");
    ok(&["topo", "add", &pump]);
    ok(&["--as", &pump, "post", r#"{"temp":5}"#]);
    assert_eq!(sim.points(&pump)["temp"]["value"], 5);
}

#[test]
fn connection_state_reaches_the_cloud_as_a_full_report_or_an_update() {
    let sim = Sim::start();
    let home = TempDir::new("connection-state");
    let env = device_env(&sim);
    let r = run(
        home.path(),
        &env,
        &[
            "connection-state",
            "#001=connected",
            "#002=disconnected",
            "--full",
            "--relation",
            "#001=#002",
            "--at",
            "1700000000000",
        ],
    );
    assert_eq!((r.code, r.stdout.trim()), (0, "ok (code 200)"), "{r:?}");
    let nodes = r##"[{"nodeId":"#002","state":"connected","name":"pump","info":"back"}]"##;
    let r = run(home.path(), &env, &["connection-state", nodes]);
    assert_eq!(r.code, 0, "{r:?}");
    let (_, device) = sim.admin(&["device", DEV]);
    let reports: Vec<&serde_json::Value> =
        device["reports"].as_array().unwrap().iter().filter(|r| r["method"] == "connection.state.post").collect();
    assert_eq!(reports.len(), 2, "{device}");
    assert_eq!(
        reports[0]["params"],
        json!({"isFull": true, "nodes": [{"nodeId": "#001", "state": 1}, {"nodeId": "#002", "state": 2}],
               "relations": {"#001": ["#002"]}, "reportTime": 1_700_000_000_000u64})
    );
    assert_eq!(reports[1]["params"]["isFull"], false);
    assert_eq!(reports[1]["params"]["nodes"], json!([{"nodeId": "#002", "state": 1, "name": "pump", "info": "back"}]));
    // Relations belong to a full report; a state is one of three.
    let r = run(home.path(), &env, &["connection-state", "#1=connected", "--relation", "#1=#2"]);
    assert!(r.code == 2 && r.stderr.contains("--full"), "{r:?}");
    let r = run(home.path(), &env, &["connection-state", "#1=up"]);
    assert!(r.code == 2 && r.stderr.contains("\"up\" is not a state: connected, disconnected or unknown"), "{r:?}");
}

#[test]
fn a_profile_that_does_not_parse_never_prints_its_secrets() {
    let home = TempDir::new("profile-secret");
    let file = home.join("profiles.toml");
    let env = vec![("ENOS_CONFIG", file.display().to_string())];
    for (text, place) in [
        // A mistyped key: named, its value not shown.
        ("[default]\nurl = \"tcp://127.0.0.1:1\"\ndevice_secrt = \"s3cret-typo\"\n", "line 3, column 1"),
        // A quote never closed: the line would hold the secret.
        ("[default]\ndevice_secret = \"s3cret-open\nurl = \"tcp://127.0.0.1:1\"\n", "line 2, column "),
        // A value of the wrong type for a secret.
        ("[default]\npassphrase = 31415926535\n", "line 2, column "),
    ] {
        std::fs::write(&file, text).unwrap();
        for args in [&["connect"][..], &["--json", "-vv", "connect"]] {
            let r = run(home.path(), &env, args);
            assert_eq!(r.code, 2, "{text:?}: {r:?}");
            assert!(r.stderr.contains(&format!("profile file {}: {place}", file.display())), "{r:?}");
            for secret in ["s3cret", "31415926535"] {
                assert!(!r.all().contains(secret), "the secret was printed: {r:?}");
            }
        }
    }
    let r = run(home.path(), &env, &["--json", "connect"]);
    assert_eq!(r.json()["error"]["kind"], "usage", "{r:?}");
}

#[test]
fn no_reply_is_refused_where_the_reply_is_the_output() {
    let home = TempDir::new("no-reply");
    // Nothing listens there: a command that went ahead would fail to connect (exit 3).
    let env = vec![
        ("ENOS_URL", "tcp://127.0.0.1:1".to_owned()),
        ("ENOS_PRODUCT_KEY", "pk".into()),
        ("ENOS_DEVICE_KEY", "dk".into()),
        ("ENOS_DEVICE_SECRET", "s".into()),
        ("ENOS_PRODUCT_SECRET", "ps".into()),
    ];
    std::fs::write(home.join("rows.csv"), "time,t\n1,1\n").unwrap();
    for (args, what) in [
        (&["tag", "get"][..], "`tag get`"),
        (&["attribute", "get"], "`attribute get`"),
        (&["tsl"], "`tsl`"),
        (&["raw", "0a"], "`raw`"),
        (&["ota", "firmwares"], "`ota firmwares`"),
        (&["ota", "download", "-o", "fw.bin"], "`ota download`"),
        (&["integration", "raw", "0a"], "`integration raw`"),
        (&["replay", "rows.csv"], "`replay`"),
    ] {
        let r = run(home.path(), &env, &[&["--no-reply"][..], args].concat());
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(&format!("--no-reply does not apply to {what}")), "{args:?}: {r:?}");
    }
    assert!(!home.join("rows.csv.enos-progress").exists());
    // Where the reply is not the output, it goes ahead (and here finds no broker).
    let r = run(home.path(), &env, &["--no-reply", "post", "{}"]);
    assert_eq!(r.code, 3, "{r:?}");
}

#[test]
fn a_secrets_folder_that_cannot_be_written_stops_what_would_issue_a_secret() {
    let sim = Sim::start();
    let home = TempDir::new("secrets-folder");
    // Under a plain file: no folder can be made there, whoever runs the test.
    std::fs::write(home.join("plain"), "").unwrap();
    let bad = ("ENOS_SECRETS_DIR", home.join("plain/secrets").display().to_string());
    let pump = format!("{SUB_PRODUCT}/pump9");

    // A registration: refused before it is sent, so the cloud issues no secret to lose.
    let mut env = gateway_env(&sim);
    env.push(bad.clone());
    let r = run(home.path(), &env, &["register", &pump, "--name", "pump 9"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stderr.contains("the secrets folder") && r.stderr.contains("plain/secrets"), "{r:?}");
    let (registered, _) = sim.admin(&["device", &pump]);
    assert!(!registered, "the registration was sent");
    // A dynamic activation: the device is not activated.
    let activating = vec![
        ("ENOS_URL", sim.url.clone()),
        ("ENOS_PRODUCT_KEY", DEVICE_PRODUCT.into()),
        ("ENOS_DEVICE_KEY", ACTIVATING_DEVICE.into()),
        ("ENOS_PRODUCT_SECRET", DEVICE_PRODUCT_SECRET.into()),
        bad,
    ];
    let r = run(home.path(), &activating, &["post", r#"{"temp":7}"#]);
    assert_eq!(r.code, 5, "{r:?}");
    let (_, device) = sim.admin(&["device", &format!("{DEVICE_PRODUCT}/{ACTIVATING_DEVICE}")]);
    assert_eq!(device["activated"], false, "{device}");

    // With a folder that takes it, the same registration goes, and its secret is kept.
    let r = run(home.path(), &gateway_env(&sim), &["--json", "register", &pump, "--name", "pump 9"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(std::path::Path::new(r.json()["data"][0]["secretFile"].as_str().unwrap()).exists());
}
