//! The public API holds only this crate's own types: none of the MQTT crate under the
//! codec, so that it can be replaced without breaking users.

use std::any::type_name;

use enos_proto::codec;

#[test]
fn the_codec_exports_only_this_crates_own_packet_types() {
    let names = [
        type_name::<codec::Packet>(),
        type_name::<codec::QoS>(),
        type_name::<codec::Connect>(),
        type_name::<codec::Login>(),
        type_name::<codec::LastWill>(),
        type_name::<codec::ConnAck>(),
        type_name::<codec::ConnectReturnCode>(),
        type_name::<codec::Publish>(),
        type_name::<codec::PubAck>(),
        type_name::<codec::PubRec>(),
        type_name::<codec::PubRel>(),
        type_name::<codec::PubComp>(),
        type_name::<codec::Subscribe>(),
        type_name::<codec::SubscribeFilter>(),
        type_name::<codec::SubAck>(),
        type_name::<codec::SubscribeReasonCode>(),
        type_name::<codec::Unsubscribe>(),
        type_name::<codec::UnsubAck>(),
    ];
    for name in names {
        assert!(name.starts_with("enos_proto::"), "{name} is not enos-proto's own");
    }
}
