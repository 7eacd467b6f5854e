//! `enos file` against a real `enos-sim` serving the device HTTP endpoint: files posted as
//! measure point values come back whole and by range, byte for byte; a deleted file is
//! gone; on an MQTT URL every file operation is a usage error that says to use HTTP.

mod support;

use serde_json::json;
use support::*;

const DEV: &str = "demo_pk/demo_device";

#[test]
fn posted_files_come_back_whole_and_by_range_and_a_deleted_one_is_gone() {
    let sim = Sim::start_with_http(&[]);
    let home = TempDir::new("files");
    let env = http_env(&sim);
    // Over three of the 256 KiB exchanges a download is made of.
    let image = pattern(700_000);
    std::fs::write(home.join("a.bin"), &image).unwrap();
    std::fs::write(home.join("cam.jpg"), b"\xff\xd8\xff\xe0 a camera's picture").unwrap();

    let r = run(
        home.path(),
        &env,
        &[
            "--json",
            "file",
            "post",
            r#"{"newFile":"local://a.bin","snapshot":{"img":"local://cam","label":"cam1"},"temp":20.5}"#,
            "--file",
            "cam=cam.jpg",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let files = r.json()["data"]["files"].clone();
    let (uri, cam) = (files[0]["uri"].as_str().unwrap().to_owned(), files[1]["uri"].as_str().unwrap().to_owned());
    assert!(uri.starts_with("enos-connect://") && uri.ends_with(".bin"), "{files}");
    assert_eq!((files[0]["point"].as_str(), files[0]["bytes"].as_u64()), (Some("newFile"), Some(700_000)));
    assert_eq!((files[1]["point"].as_str(), files[1]["member"].as_str()), (Some("snapshot"), Some("img")));
    // The cloud keeps each file under its URI, the value of its point.
    let points = sim.points(DEV);
    assert_eq!(points["newFile"]["value"], json!(uri));
    assert_eq!(points["snapshot"]["value"], json!({"img": cam, "label": "cam1"}));
    assert_eq!(points["temp"]["value"], 20.5);

    // Whole, to a file.
    let r = run(home.path(), &env, &["file", "download", &uri, "-o", "out.bin"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), format!("700000 bytes of {uri} written to out.bin"));
    assert!(std::fs::read(home.join("out.bin")).unwrap() == image, "the whole file differs");
    assert!(!home.join("out.bin.part").exists());

    // By range, to standard output: the bytes and nothing else.
    let out = run_raw(home.path(), &env, &["file", "download", &uri, "--range", "10-19"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, &image[10..20]);
    for (range, want) in [
        ("300000-", &image[300_000..]),
        ("-100", &image[699_900..]),
        // More than one exchange from the end: the size is asked first.
        ("-400000", &image[300_000..]),
        ("699990-800000", &image[699_990..]),
        ("262140-262150", &image[262_140..=262_150]),
    ] {
        let r = run(home.path(), &env, &["file", "download", &uri, "--range", range, "-o", "part.bin"]);
        assert_eq!(r.code, 0, "{range}: {r:?}");
        assert!(std::fs::read(home.join("part.bin")).unwrap() == want, "{range}: the bytes differ");
    }
    let r = run(home.path(), &env, &["--json", "file", "download", &uri, "--range", "-100", "-o", "part.bin"]);
    assert_eq!(r.json()["range"], json!({"start": 699_900, "end": 699_999, "total": 700_000}), "{r:?}");
    assert_eq!(r.json()["bytes"], 100);

    // A range past the end: the cloud's 416, said in words; nothing written.
    let r = run(home.path(), &env, &["file", "download", &uri, "--range", "800000-900000", "-o", "past.bin"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("the range 800000-900000 is outside the file"), "{r:?}");
    assert!(!home.join("past.bin").exists() && !home.join("past.bin.part").exists());

    // A download URL, that works without a session.
    let r = run(home.path(), &env, &["file", "url", &uri]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.trim().starts_with(sim.http_url.as_deref().unwrap()), "{r:?}");

    // Deleted: gone, and a download says so (exit 1) and leaves no file behind.
    let r = run(home.path(), &env, &["file", "delete", &uri]);
    assert_eq!((r.code, r.stdout.trim()), (0, format!("deleted {uri}").as_str()), "{r:?}");
    let r = run(home.path(), &env, &["file", "download", &uri, "-o", "gone.bin"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(&format!("the cloud has no file {uri} of category feature (HTTP status 404)")), "{r:?}");
    assert!(!home.join("gone.bin").exists() && !home.join("gone.bin.part").exists());
    let r = run(home.path(), &env, &["--json", "file", "download", &uri, "-o", "gone.bin"]);
    assert_eq!((r.json()["error"]["kind"].as_str(), r.json()["error"]["exit"].as_i64()), (Some("not_found"), Some(1)));
    let r = run(home.path(), &env, &["file", "delete", &uri]);
    assert!(r.code == 1 && r.stderr.contains("has no file"), "{r:?}");
    let (_, device) = sim.admin(&["device", DEV]);
    let kept: Vec<&str> = device["files"].as_array().unwrap().iter().filter_map(|f| f["uri"].as_str()).collect();
    assert_eq!(kept, [cam.as_str()], "{device}");
}

#[test]
fn on_an_mqtt_url_files_are_a_usage_error_that_says_to_use_http() {
    let sim = Sim::start();
    let home = TempDir::new("files-mqtt");
    let env = device_env(&sim);
    std::fs::write(home.join("a.bin"), b"abc").unwrap();
    for args in [
        &["file", "post", r#"{"newFile":"local://a.bin"}"#][..],
        &["file", "download", "enos-connect://x.bin", "-o", "x.bin"],
        &["file", "url", "enos-connect://x.bin"],
        &["file", "delete", "enos-connect://x.bin"],
        // A firmware of the cloud's storage is fetched over HTTP too.
        &[
            "ota",
            "download",
            "--firmware",
            r#"{"version":"3","signMethod":"md5","sign":"00","fileUrl":"enos-connect://fw.bin","fileSize":1}"#,
            "-o",
            "fw.bin",
        ],
    ] {
        let r = run(home.path(), &env, args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("over the HTTP transport only") && r.stderr.contains("an http:// or https:// URL"),
            "{r:?}"
        );
    }
    let r = run(home.path(), &env, &["--json", "file", "url", "enos-connect://x.bin"]);
    assert_eq!(r.json()["error"]["kind"], "usage");
    assert!(!home.join("x.bin").exists() && !home.join("fw.bin").exists());

    // Arguments are checked before anything connects (nothing listens at this URL).
    let nowhere = vec![
        ("ENOS_URL", "http://127.0.0.1:1".to_owned()),
        ("ENOS_PRODUCT_KEY", "pk".into()),
        ("ENOS_DEVICE_KEY", "dk".into()),
        ("ENOS_DEVICE_SECRET", "s".into()),
    ];
    for (args, what, code) in [
        (&["file", "post", r#"{"temp":1}"#][..], "no value is a file", 2),
        (&["file", "post", r#"{"newFile":"local://nope.bin"}"#], "nope.bin (of local://nope.bin)", 5),
        (&["file", "post", r#"{"newFile":"local://a.bin"}"#, "--file", "b=a.bin"], "no value is \"local://b\"", 2),
        (&["file", "download", "u", "--range", "9-1"], "--range: \"9-1\": the end comes before the start", 2),
        (&["--json", "file", "download", "u"], "give -o PATH for the file's bytes", 2),
        (&["--as", "pk/sub", "file", "url", "u"], "stored files are the connected device's own", 2),
    ] {
        let r = run(home.path(), &nowhere, args);
        assert_eq!(r.code, code, "{args:?}: {r:?}");
        assert!(r.stderr.contains(what), "{args:?}: {r:?}");
    }
}
