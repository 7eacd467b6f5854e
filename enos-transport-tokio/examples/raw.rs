//! Raw data: bytes up (the reply is bytes), and a handler for bytes down.
//!
//!     cargo run -p enos-transport-tokio --example raw

#[path = "common/mod.rs"]
mod common;

use enos_transport_tokio::proto::{CommandKind, DeviceKeys};
use enos_transport_tokio::{DeviceClient, RequestOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (options, sim) = common::setup(false).await?;
    let keys = DeviceKeys::new(options.product_key.clone(), options.device_key.clone())?;
    let client = DeviceClient::new(options)?;
    client.connect().await?;
    let r = client.device_data().up_raw_model(vec![0x01, 0x00, 0x02, 0x27, 0x10], RequestOptions::new()).await?;
    println!("up_raw_model reply: {:02x?}", &r.data[..]);
    client.device_command().on_down_raw_model(None, |cmd, res| async move {
        if let CommandKind::RawDown { payload } = cmd.kind {
            println!("raw down: {:02x?}", &payload[..]);
            res.raw(vec![0x04, 0x00]);
        }
    });
    if let Some(sim) = sim {
        let reply = sim.send_down_raw(&keys, bytes::Bytes::from_static(&[0x03, 0x00, 0x05])).await?;
        println!("the cloud got: {:02x?}", &reply[..]);
    }
    client.close().await?;
    Ok(())
}
