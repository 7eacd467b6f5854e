//! Files over the HTTP transport: a measure point post that carries a file, a ranged
//! download, a download streamed to a file, a direct URL, and deletion.
//!
//!     cargo run -p enos-transport-tokio --example files
//!
//! Against your EnOS: `BROKER_URL` (its HTTP broker, `https://...`), `PK`, `DK`, `SECRET`
//! (and `CA_FILE`); the product needs a FILE-type measure point `newFile`.

use enos_sim::registry::defaults::*;
use enos_sim::Sim;
use enos_transport_tokio::proto::http::{ByteRange, FileCategory, FileUpload, MeasurepointFilePost};
use enos_transport_tokio::{ClientOptions, DeviceClient, RequestOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut _sim = None;
    let options = match env("BROKER_URL") {
        Some(url) => {
            let mut o = ClientOptions::new(url, env("PK").ok_or("PK is not set")?, env("DK").ok_or("DK is not set")?);
            o.device_secret = Some(env("SECRET").ok_or("SECRET is not set")?.into());
            if let Some(ca) = env("CA_FILE") {
                o.ca = Some(std::fs::read(ca)?);
            }
            o
        }
        None => {
            let sim = Sim::builder().http(([127, 0, 0, 1], 0).into()).start().await?;
            let url = sim.http_url().ok_or("no HTTP endpoint")?;
            println!("(no BROKER_URL: using the built-in local cloud's HTTP endpoint at {url})");
            _sim = Some(sim);
            let mut o = ClientOptions::new(url, DEVICE_PRODUCT, DEVICE);
            o.device_secret = Some(DEVICE_SECRET.into());
            o
        }
    };
    let client = DeviceClient::new(options)?;
    client.connect().await?;
    let files = client.files();

    // The file's name on the wire: eight random bytes in URL-safe base64, then ".csv".
    let content: Vec<u8> = (0..5000).flat_map(|i| format!("{i},{}\n", i * i).into_bytes()).collect();
    let upload = FileUpload::new("newFile", "readings.csv", content.clone(), rand_seed());
    let uri = format!("enos-connect://{}", upload.file_name());
    let post = MeasurepointFilePost::new(vec![upload]).point("temp", 21.5);
    println!(
        "post with a file of {} bytes: code {}",
        content.len(),
        files.post_measurepoint(post, RequestOptions::new()).await?.code
    );

    let head = files
        .download(&uri, FileCategory::Feature, Some(ByteRange::Span { start: 0, end: 31 }), RequestOptions::new())
        .await?;
    println!("first 32 bytes (of {:?}): {:?}", head.data.total(), String::from_utf8_lossy(&head.data.bytes));
    let path = std::env::temp_dir().join("enos-example-readings.csv");
    let mut out = std::fs::File::create(&path)?;
    let n = files.download_to(&uri, FileCategory::Feature, &mut out).await?;
    println!("downloaded {n} bytes to {}", path.display());
    println!("direct URL: {}", files.download_url(&uri, FileCategory::Feature, RequestOptions::new()).await?.data);
    println!("delete: code {}", files.delete(&uri, RequestOptions::new()).await?.code);
    client.close().await?;
    Ok(())
}

/// Eight bytes that differ from run to run (a file name need only be unique).
fn rand_seed() -> [u8; 8] {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (t as u64 ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes()
}
