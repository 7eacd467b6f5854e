//! The device HTTP endpoint's refusals, in raw HTTP: a wrong login, an unknown session, a
//! file post whose files do not match its request, ranges that cannot be served, and the
//! vendor's Java spellings it accepts.

use enos_proto::http::{
    auth_sign, ByteRange, FileCategory, FileUpload, HttpRequest, HttpTarget, MeasurepointFilePost, ReadItem,
    ResponseReader,
};
use enos_proto::{DeviceKeys, Secret};
use enos_sim::registry::defaults::*;
use enos_sim::Sim;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request on a connection of its own.
async fn call(target: &HttpTarget, r: &HttpRequest) -> Reply {
    let mut s = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await.unwrap();
    let mut wire = Vec::new();
    r.write(target, &mut wire);
    s.write_all(&wire).await.unwrap();
    let mut reader = ResponseReader::new();
    let (mut status, mut headers, mut body) = (0, Vec::new(), Vec::new());
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the response ended");
        reader.feed(&buf[..n]);
        while let Some(item) = reader.read().unwrap() {
            match item {
                ReadItem::Head(h) => {
                    status = h.status.as_u16();
                    headers = h
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                        .collect();
                }
                ReadItem::Body(b) => body.extend_from_slice(&b),
                ReadItem::End { .. } => return Reply { status, headers, body },
            }
        }
    }
}

fn keys() -> DeviceKeys {
    DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap()
}

async fn login(target: &HttpTarget) -> String {
    let r = call(target, &target.login(&keys(), &Secret::new(DEVICE_SECRET), 300_000, &[])).await;
    r.json()["data"]["sessionId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_endpoint_refuses_what_it_cannot_take_with_its_codes() {
    let sim = Sim::builder().http(([127, 0, 0, 1], 0).into()).start().await.unwrap();
    let url = sim.http_url().unwrap();
    let target = HttpTarget::parse(&url).unwrap();

    // Logins: a wrong signature 401, an unknown device 402; upper case and a string
    // lifetime are taken (spec C2, C3).
    let wrong = call(&target, &target.login(&keys(), &Secret::new("nope"), 300_000, &[])).await;
    assert_eq!((wrong.status, wrong.json()["code"].clone()), (200, json!(401)));
    let nobody = DeviceKeys::new(DEVICE_PRODUCT, "nobody").unwrap();
    let unknown = call(&target, &target.login(&nobody, &Secret::new("x"), 300_000, &[])).await;
    assert_eq!(unknown.json()["code"], 402);
    let sign = auth_sign(&keys(), &Secret::new(DEVICE_SECRET), 30_000).to_uppercase();
    let mut java = target.login(&keys(), &Secret::new(DEVICE_SECRET), 30_000, &[]);
    java.body = json!({"signMethod": "sha256", "lifetime": "30000", "sign": sign}).to_string().into();
    java.path = format!("/{}", java.path); // the Java SDK's "//auth" after a trailing slash
    assert_eq!(call(&target, &java).await.json()["code"], 200);

    // An unknown session: HTTP 401 with the request's id.
    let body = br#"{"id":"7","version":"1.0","params":{"measurepoints":{"temp":1},"time":1},"method":"thing.measurepoint.post"}"#;
    let r =
        call(&target, &target.publish("/sys/demo_pk/demo_device/thing/measurepoint/post", "nope", &body[..], false))
            .await;
    assert_eq!((r.status, r.json()), (401, json!({"id": "7", "code": 401, "message": "session invalid"})));
    let sid = login(&target).await;
    // Another device's topic: 1009.
    let r =
        call(&target, &target.publish("/sys/demo_gw_pk/demo_gateway/thing/measurepoint/post", &sid, &body[..], false))
            .await;
    assert_eq!(r.json()["code"], 1009);

    // File posts: a file whose bytes are not those its request describes (1220), and a
    // reference with no part (1206). Nothing is stored.
    let topic = "/sys/demo_pk/demo_device/thing/measurepoint/post";
    let post = MeasurepointFilePost::new(vec![FileUpload::new("newFile", "a.txt", &b"hello"[..], [3; 8])]).at(1);
    let body = post.body(9, 1, "b0undary").unwrap();
    let tampered = String::from_utf8(body.clone()).unwrap().replace("hello", "jello");
    let r = call(&target, &target.multipart(topic, &sid, "b0undary", tampered.into_bytes())).await;
    assert_eq!(r.json()["code"], 1220);
    let missing = String::from_utf8(body.clone()).unwrap();
    let cut = missing.find("--b0undary\r\nContent-Disposition: form-data; name=\"enos-file\"").unwrap();
    let r = call(
        &target,
        &target.multipart(topic, &sid, "b0undary", format!("{}--b0undary--\r\n", &missing[..cut]).into_bytes()),
    )
    .await;
    assert_eq!(r.json()["code"], 1206);
    assert!(sim.file(&keys(), "enos-connect://AwMDAwMDAwM.txt").is_none());
    let r = call(&target, &target.multipart(topic, &sid, "b0undary", body)).await;
    assert_eq!(r.json()["code"], 200);
    assert_eq!(sim.files(&keys()), [("enos-connect://AwMDAwMDAwM.txt".to_owned(), FileCategory::Feature, 5)]);

    // Ranges: the last bytes, one past the end (416), and the older `fileUrl` spelling.
    let uri = "enos-connect://AwMDAwMDAwM.txt";
    let last =
        call(&target, &target.download(&keys(), &sid, uri, FileCategory::Feature, Some(ByteRange::Last(3)))).await;
    assert_eq!((last.status, &last.body[..], last.header("content-range")), (206, &b"llo"[..], Some("bytes 2-4/5")));
    let past =
        call(&target, &target.download(&keys(), &sid, uri, FileCategory::Feature, Some(ByteRange::From(5)))).await;
    assert_eq!((past.status, past.header("content-range")), (416, Some("bytes */5")));
    let mut older = target.download(&keys(), &sid, uri, FileCategory::Feature, None);
    older.path = older.path.replace("fileUri=", "fileUrl=");
    assert_eq!(call(&target, &older).await.body, b"hello");
    // The wrong category, or another device's file: 404.
    let r = call(&target, &target.download(&keys(), &sid, uri, FileCategory::Ota, None)).await;
    assert_eq!(r.status, 404);
}
