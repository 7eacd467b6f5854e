//! Measure points: post, post at a time, resume offline data, batches.
//!
//!     cargo run -p enos-transport-tokio --example measurepoints

#[path = "common/mod.rs"]
mod common;

use enos_transport_tokio::proto::ops::{BatchEntry, MeasurepointBatchPost, MeasurepointBatchResume};
use enos_transport_tokio::{DeviceClient, Qos, RequestOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (options, _sim) = common::setup(false).await?;
    let client = DeviceClient::new(options)?;
    client.connect().await?;
    let data = client.device_data();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let r = data
        .post_measurepoint(json!({"temp": 21.5, "voltage": {"value": 229.8, "quality": 9}}), RequestOptions::new())
        .await?;
    println!("post_measurepoint: code {}", r.code);
    data.post_measurepoint_at(json!({"humidity": 48.0}), now - 1000, RequestOptions::new()).await?;
    data.resume_measurepoint(json!({"temp": 19.0}), now - 3_600_000, RequestOptions::new()).await?;
    let batch = MeasurepointBatchPost::new(vec![
        BatchEntry::own(json!({"temp": 21.0}), Some(now - 2000)),
        BatchEntry::own(json!({"temp": 21.2}), Some(now - 1000)),
    ]);
    println!(
        "batch_post_measurepoint: code {}",
        data.batch_post_measurepoint(batch, RequestOptions::new()).await?.code
    );
    let resume =
        MeasurepointBatchResume::new(vec![BatchEntry::own(json!({"temp": 18.5, "nope": 1}), Some(now - 7_200_000))])
            .skip_invalid_measurepoints(true);
    println!(
        "batch_resume_measurepoint: code {}",
        data.batch_resume_measurepoint(resume, RequestOptions::new()).await?.code
    );
    // At most once, without waiting for the reply.
    let r = data
        .post_measurepoint(json!({"temp": 22.0}), RequestOptions::new().qos(Qos::AtMostOnce).need_reply(false))
        .await?;
    println!("fire and forget: delivered (id {:?})", r.id);
    client.close().await?;
    Ok(())
}
