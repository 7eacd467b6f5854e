//! OTA over the HTTP transport: an upgrade command arrives, the device accepts it, then
//! downloads the firmware to a file, checking its digest and size as the bytes arrive, and
//! reports progress; a firmware whose digest does not match leaves nothing behind.
//!
//!     cargo run -p enos-transport-tokio --example ota_download
//!
//! It runs against the built-in local cloud, which plays the upgrade campaign.

use std::sync::Arc;

use enos_sim::registry::defaults::*;
use enos_sim::Sim;
use enos_transport_tokio::proto::http::FileCategory;
use enos_transport_tokio::proto::CommandKind;
use enos_transport_tokio::{ClientOptions, DeviceClient, DeviceKeys, Error, Firmware, RequestOptions};
use serde_json::json;
use sha2::Digest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Sim::builder().http(([127, 0, 0, 1], 0).into()).start().await?;
    let keys = DeviceKeys::new(DEVICE_PRODUCT, DEVICE)?;
    // The campaign: a firmware image in the cloud's storage, and its upgrade command.
    let image: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    sim.add_file(&keys, "enos-connect://fw_2.0.1.bin", FileCategory::Ota, image.clone().into())?;
    let firmware = Firmware {
        version: "2.0.1".into(),
        sign_method: "sha256".into(),
        sign: sha2::Sha256::digest(&image).iter().map(|b| format!("{b:02x}")).collect(),
        file_url: "enos-connect://fw_2.0.1.bin".into(),
        file_size: image.len() as u64,
    };

    let mut options = ClientOptions::new(sim.http_url().ok_or("no HTTP endpoint")?, DEVICE_PRODUCT, DEVICE);
    options.device_secret = Some(DEVICE_SECRET.into());
    let client = Arc::new(DeviceClient::new(options)?);
    client.connect().await?;
    let (tx, mut upgrades) = tokio::sync::mpsc::unbounded_channel();
    client.device_command().on_ota_upgrade(None, move |cmd, res| {
        let tx = tx.clone();
        async move {
            if let CommandKind::OtaUpgrade { firmware } = cmd.kind {
                res.ok(json!({}));
                let _ = tx.send(firmware);
            }
        }
    });
    let push = tokio::spawn({
        let (sim, keys, firmware) = (sim.clone(), keys.clone(), firmware.clone());
        async move { sim.push_ota(&keys, firmware).await }
    });
    // Over HTTP a command rides on a response: the device's periodic post brings it.
    let firmware = loop {
        client.device_data().post_measurepoint(json!({"temp": 21.5}), RequestOptions::new()).await?;
        if let Ok(fw) = upgrades.try_recv() {
            break fw;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    push.await??;
    println!("upgrade to {} ({} bytes, {})", firmware.version, firmware.file_size, firmware.sign_method);

    let path = std::env::temp_dir().join("enos-example-firmware.bin");
    let n =
        client.ota().download_firmware(&firmware, &path, |got, total| println!("  {got} of {total:?} bytes")).await?;
    println!("checked and kept: {n} bytes at {}", path.display());
    // Install it, then say so.
    client.ota().report_progress("100", "installed", RequestOptions::new()).await?;
    client.ota().report_version(&firmware.version, RequestOptions::new()).await?;

    let bad = Firmware { sign: "0".repeat(64), ..firmware };
    match client.ota().download_firmware(&bad, &path.with_extension("bad"), |_, _| {}).await {
        Err(Error::Firmware(e)) => println!("refused: {e}; nothing written"),
        other => println!("unexpected: {other:?}"),
    }
    client.close().await?;
    Ok(())
}
