//! `enos ota download` against a real `enos-sim`: the firmware the cloud offers (the
//! highest version, or the one asked for) is downloaded and checked; one whose digest or
//! size does not match fails with a clear error and leaves nothing behind. A firmware
//! given with `--firmware` (as an upgrade push carries it) works the same way.

mod support;

use enos_sim::registry::defaults::*;
use enos_transport_blocking::proto::http::FileUpload;
use serde_json::json;
use support::*;

/// The lower-case hex MD5 of `bytes` (the SDK's, as a file post computes it).
fn md5(bytes: &[u8]) -> String {
    FileUpload::new("p", "f", bytes.to_vec(), [0; 8]).md5()
}

#[test]
fn the_offered_firmware_is_downloaded_and_checked_and_a_bad_one_leaves_nothing() {
    let home = TempDir::new("firmware");
    // Three ranges of 256 KiB and a bit, served at a plain URL.
    let image = pattern(600_000);
    let server = FileServer::start("/firmware/fw.bin", image.clone());
    let firmware = |version: &str, sign: &str, size: usize| json!({"version": version, "signMethod": "MD5", "sign": sign, "fileUrl": server.url, "fileSize": size});
    let registry = json!({
        "products": [{"productKey": DEVICE_PRODUCT, "productSecret": DEVICE_PRODUCT_SECRET, "firmwares": [
            firmware("2.0.1", &md5(b"another image"), image.len()),
            firmware("2.0.10", &md5(&image).to_uppercase(), image.len()),
            firmware("1.9.0", &md5(&image), image.len() + 1),
        ]}],
        "devices": [{"productKey": DEVICE_PRODUCT, "deviceKey": DEVICE, "deviceSecret": DEVICE_SECRET}],
    });
    let file = home.join("registry.json");
    std::fs::write(&file, registry.to_string()).unwrap();
    let sim = Sim::start_with(&["--registry", file.to_str().unwrap()]);
    let env = device_env(&sim);

    // The highest version (2.0.10 is above 2.0.1), checked as it arrives.
    let r = run(home.path(), &env, &["--json", "ota", "download", "-o", "fw.bin"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(
        (doc["version"].as_str(), doc["bytes"].as_u64(), doc["checked"].as_bool()),
        (Some("2.0.10"), Some(600_000), Some(true))
    );
    assert!(std::fs::read(home.join("fw.bin")).unwrap() == image, "the firmware differs");
    assert!(!home.join("fw.bin.part").exists());
    assert!(server.requests.load(std::sync::atomic::Ordering::SeqCst) >= 3, "not downloaded by ranges");
    let r = run(home.path(), &env, &["ota", "download", "--version", "2.0.10", "-o", "again.bin"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("firmware 2.0.10 downloaded to again.bin and checked: 600000 bytes, MD5 "), "{r:?}");

    // A digest that does not match: exit 1, said, and nothing kept.
    let r = run(home.path(), &env, &["ota", "download", "--version", "2.0.1", "-o", "bad.bin"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("firmware 2.0.1 failed its check: firmware digest")
            && r.stderr.contains("does not match the upgrade's sign")
            && r.stderr.contains("nothing was kept at bad.bin"),
        "{r:?}"
    );
    assert!(!home.join("bad.bin").exists() && !home.join("bad.bin.part").exists());
    // A size that does not match.
    let r = run(home.path(), &env, &["--json", "ota", "download", "--version", "1.9.0", "-o", "bad.bin"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.json()["error"]["kind"], "check_failed");
    assert!(r.stderr.contains("firmware is 600000 bytes, the upgrade says 600001"), "{r:?}");
    assert!(!home.join("bad.bin").exists() && !home.join("bad.bin.part").exists());
    // A version the cloud does not offer.
    let r = run(home.path(), &env, &["ota", "download", "--version", "3.0", "-o", "none.bin"]);
    assert!(
        r.code == 1 && r.stderr.contains("the cloud offers no firmware 3.0 (it offers 2.0.1, 2.0.10, 1.9.0)"),
        "{r:?}"
    );
}

#[test]
fn a_firmware_given_as_pushed_is_downloaded_from_the_clouds_storage_and_checked() {
    let sim = Sim::start_with_http(&[]);
    let home = TempDir::new("firmware-given");
    let env = http_env(&sim);
    let image = pattern(300_000);
    std::fs::write(home.join("fw-2.1.0.bin"), &image).unwrap();
    // The image put in the cloud's storage, and a URL that downloads it without a session.
    let r = run(home.path(), &env, &["--json", "file", "post", r#"{"newFile":"local://fw-2.1.0.bin"}"#]);
    assert_eq!(r.code, 0, "{r:?}");
    let uri = r.json()["data"]["files"][0]["uri"].as_str().unwrap().to_owned();
    let url = run(home.path(), &env, &["file", "url", &uri]).stdout.trim().to_owned();
    let given = |size: usize| {
        json!({"version": "2.1.0", "signMethod": "md5", "sign": md5(&image), "fileUrl": url, "fileSize": size})
            .to_string()
    };
    let r = run(home.path(), &env, &["ota", "download", "--firmware", &given(image.len()), "-o", "fw.bin"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(std::fs::read(home.join("fw.bin")).unwrap() == image);
    // On MQTT too: a plain URL needs no HTTP session.
    let r =
        run(home.path(), &device_env(&sim), &["ota", "download", "--firmware", &given(image.len()), "-o", "fw2.bin"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(home.path(), &env, &["ota", "download", "--firmware", &given(1), "-o", "small.bin"]);
    assert!(r.code == 1 && r.stderr.contains("firmware is 300000 bytes, the upgrade says 1"), "{r:?}");
    assert!(!home.join("small.bin").exists() && !home.join("small.bin.part").exists());
    // A stored file the cloud does not have.
    let missing =
        json!({"version": "9", "signMethod": "md5", "sign": "00", "fileUrl": "enos-connect://none.bin", "fileSize": 1});
    let r = run(home.path(), &env, &["ota", "download", "--firmware", &missing.to_string(), "-o", "none.bin"]);
    assert!(r.code == 1 && r.stderr.contains("the cloud has no file enos-connect://none.bin for firmware 9"), "{r:?}");
    // What --firmware gives is checked before anything connects.
    let bad = json!({"version": "9", "signMethod": "crc32", "sign": "00", "fileUrl": "u"}).to_string();
    let r = run(home.path(), &env, &["ota", "download", "--firmware", &bad, "-o", "x.bin"]);
    assert!(r.code == 2 && r.stderr.contains("--firmware: firmware sign method \"crc32\" is not supported"), "{r:?}");
}
