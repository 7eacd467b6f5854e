use enos_transport_tokio::{ClientOptions, DeviceClient, RequestOptions};
use serde_json::json;

/// `url`: your EnOS broker, or the local cloud (`cargo run -p enos-sim -- serve` listens on
/// tcp://127.0.0.1:11883 and has this device built in).
pub async fn run(url: &str) -> Result<DeviceClient, Box<dyn std::error::Error>> {
    let mut options = ClientOptions::new(url, "demo_pk", "demo_device");
    options.device_secret = Some("demo_device_secret".into());
    let client = DeviceClient::new(options)?;
    client.connect().await?;
    client.device_data().post_measurepoint(json!({"temp": 21.5}), RequestOptions::new()).await?;
    client.device_command().on_invoke_service("reset", None, |_cmd, res| async move {
        res.ok(json!({"done": true}));
    });
    Ok(client) // it stays connected, and answers "reset", until it is closed or dropped
}
