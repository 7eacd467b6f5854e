//! Writes the fuzz seed corpus from real traffic: every packet of the spec's vectors, and
//! the packets a device exchanged with the simulator, as the codec target takes them.
//!
//!     cargo run -p enos-sim --example fuzz_seeds -- fuzz/seeds

use std::path::PathBuf;

use bytes::BytesMut;
use enos_proto::codec::{self, ConnAck, Connect, ConnectReturnCode, Packet, PubAck, QoS, SubAck, SubscribeReasonCode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/seeds".into())).join("codec");
    std::fs::create_dir_all(&dir)?;
    let messages: serde_json::Value = serde_json::from_str(include_str!("../../enos-proto/tests/data/messages.json"))?;
    let signs: serde_json::Value = serde_json::from_str(include_str!("../../enos-proto/tests/data/sign.json"))?;
    let mut n = 0;
    let mut write = |name: &str, packets: &[Packet]| -> std::io::Result<()> {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[(n % 17) as u8]);
        for p in packets {
            codec::encode_packet(&mut b, p).expect("vector packets encode");
        }
        n += 1;
        std::fs::write(dir.join(name), &b)
    };
    for v in signs["vectors"].as_array().into_iter().flatten().filter(|v| v["kind"] == "connect") {
        let e = &v["expected"];
        let mut c = Connect::new(e["clientId"].as_str().unwrap_or_default());
        c.set_login(e["username"].as_str().unwrap_or_default(), e["password"].as_str().unwrap_or_default());
        c.keep_alive = 60;
        write(&format!("connect-{}", v["name"].as_str().unwrap_or("x")), &[Packet::Connect(c)])?;
    }
    for v in messages["upstream"].as_array().into_iter().flatten() {
        let t = v["topic"].as_str().unwrap_or_default();
        let mut p = codec::Publish::new(t, QoS::AtLeastOnce, v["payloadText"].as_str().unwrap_or_default());
        p.pkid = 7;
        let reply = v["exampleReply"]["payload"].to_string();
        let r = codec::Publish::new(v["replyTopic"].as_str().unwrap_or_default(), QoS::AtMostOnce, reply);
        write(
            &format!("up-{}", v["name"].as_str().unwrap_or("x")),
            &[Packet::Publish(p), Packet::PubAck(PubAck::new(7)), Packet::Publish(r)],
        )?;
    }
    for v in messages["downstream"].as_array().into_iter().flatten() {
        let mut p = codec::Publish::new(
            v["inbound"]["topic"].as_str().unwrap_or_default(),
            QoS::AtLeastOnce,
            v["inbound"]["payloadText"].as_str().unwrap_or_default(),
        );
        p.pkid = 9;
        let r = codec::Publish::new(
            v["reply"]["topic"].as_str().unwrap_or_default(),
            QoS::AtMostOnce,
            v["reply"]["payloadText"].as_str().unwrap_or_default(),
        );
        write(&format!("down-{}", v["name"].as_str().unwrap_or("x")), &[Packet::Publish(p), Packet::Publish(r)])?;
    }
    write(
        "session-start",
        &[
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
            Packet::SubAck(SubAck::new(
                1,
                vec![SubscribeReasonCode::Success(QoS::AtLeastOnce), SubscribeReasonCode::Failure],
            )),
            Packet::PingResp,
            Packet::PubAck(PubAck::new(2)),
        ],
    )?;
    println!("wrote {n} seeds to {}", dir.display());
    Ok(())
}
