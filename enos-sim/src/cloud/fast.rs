//! The fast way of reading the most common requests, measure point posts and batch posts:
//! their envelope and points read straight from the bytes, with point names borrowed and
//! no JSON tree of the envelope, then checked and stored by the same functions as the
//! general way ([`super::points`]). What these readers do not take (an escape in a name,
//! a field given twice, a shape they do not know) goes the general way, which gives every
//! error its code; the tests below hold both ways to the same replies and the same state.

use std::borrow::Cow;

use enos_proto::DeviceKeys;
use serde::de::MapAccess;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::envelope::{id_text, Answer};
use super::points::{accepts_point, BatchFlags, PostedPoints};
use super::{Cloud, ConnId};

impl Cloud {
    /// The most common request, a valid measure point post or resume, read without a JSON
    /// tree of its envelope and stored: its reply id. `None` sends the request the general
    /// way (which gives every error its code and stores the same when it is valid).
    pub(super) fn fast_post(
        &mut self,
        keys: &DeviceKeys,
        method: &str,
        payload: &[u8],
        now_ms: u64,
        resume: bool,
    ) -> Option<String> {
        let (id, envelope) = FastEnvelope::<PostedPoints<'_>>::read(payload, method)?;
        let PostedPoints { points, time, .. } = envelope.params?;
        let model = self.point_model(keys);
        if !points.iter().all(|(k, v)| accepts_point(model, k, v)) {
            return None;
        }
        self.store_points(keys, points.into_iter(), time.unwrap_or(now_ms), resume);
        Some(id)
    }

    /// A batch post read without a JSON tree (point names borrowed), then checked and
    /// stored as the general way does: the reply id and the answer. `None` when it cannot
    /// be read so; the general way then reads it and gives its error.
    pub(super) fn fast_batch(
        &mut self,
        conn: ConnId,
        keys: &DeviceKeys,
        method: &str,
        payload: &[u8],
        now_ms: u64,
        resume: bool,
    ) -> Option<(String, Answer)> {
        let (id, envelope) = FastEnvelope::<Vec<PostedPoints<'_>>>::read(payload, method)?;
        let flag = |v: &Option<Value>| v.as_ref().and_then(Value::as_bool).unwrap_or(false);
        let flags =
            BatchFlags { allow_offline: flag(&envelope.allow_offline), skip_invalid: flag(&envelope.skip_invalid) };
        let entries = envelope.params?.into_iter().map(Some);
        Some((id, self.batch_entries(conn, keys, entries, flags, now_ms, resume)))
    }
}

/// Measure points read from a JSON object with their names borrowed, in the order sent,
/// their values owned. A name given twice is an error (the general way keeps the last, as
/// a JSON tree's map does).
struct PointsIn<'a>(Vec<(&'a str, Cow<'a, Value>)>);

impl<'de: 'a, 'a> FromObject<'de> for PointsIn<'a> {
    fn from_object<A: MapAccess<'de>>(mut m: A) -> Result<Self, A::Error> {
        let mut points: Vec<(&'a str, Cow<'a, Value>)> = Vec::with_capacity(m.size_hint().unwrap_or(8));
        while let Some((k, v)) = m.next_entry::<&'de str, Value>()? {
            points.push((k, Cow::Owned(v)));
        }
        if has_repeated_name(&points) {
            return Err(serde::de::Error::custom("a measure point twice"));
        }
        Ok(PointsIn(points))
    }
}

/// Whether two points have the same name: compared pairwise when there are few (no
/// allocation), sorted when there are many.
fn has_repeated_name(points: &[(&str, Cow<'_, Value>)]) -> bool {
    if points.len() <= 16 {
        return points.iter().enumerate().any(|(i, (a, _))| points[..i].iter().any(|(b, _)| a == b));
    }
    let mut names: Vec<&str> = points.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    names.windows(2).any(|w| w[0] == w[1])
}

/// What the fast paths read from a JSON object, and from nothing else.
trait FromObject<'de>: Sized {
    fn from_object<A: MapAccess<'de>>(m: A) -> Result<Self, A::Error>;
}

/// Reads a [`FromObject`] type: anything but an object is an error.
struct ObjectOnly<T>(std::marker::PhantomData<T>);

impl<'de, T: FromObject<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<T, A::Error> {
        T::from_object(m)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PointsIn<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectOnly(std::marker::PhantomData))
    }
}

/// A request's envelope as the fast paths read it.
#[derive(Deserialize)]
struct FastEnvelope<'a, P> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    // Text with escapes does not borrow: an error, and so the general way.
    method: Option<&'a str>,
    params: Option<P>,
    #[serde(rename = "allowOfflineSubDevice")]
    allow_offline: Option<Value>,
    #[serde(rename = "skipInvalidMeasurepoints")]
    skip_invalid: Option<Value>,
}

impl<'a, P: Deserialize<'a>> FastEnvelope<'a, P> {
    /// The reply id and the envelope of a JSON object whose method is `method`.
    fn read(payload: &'a [u8], method: &str) -> Option<(String, Self)> {
        if !starts_object(payload) {
            return None;
        }
        let envelope: Self = serde_json::from_slice(payload).ok()?;
        if envelope.method != Some(method) {
            return None;
        }
        let id = match envelope.id {
            None => String::new(),
            Some(raw) => id_text(&serde_json::from_str(raw.get()).ok()?),
        };
        Some((id, envelope))
    }
}

/// Whether JSON text is an object (serde would also read a struct from an array).
fn starts_object(text: &[u8]) -> bool {
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Measure points with their time as the fast paths read them: the `params` of a post
/// ([`Cloud::fast_post`], which ignores keys there as the general way does) and an entry of
/// a batch ([`Cloud::fast_batch`]). An object only (a derived reader would take an array
/// too), each field at most once, `productKey` and `deviceKey` both or neither (valid
/// keys), `measurepoints` present, point names borrowed. Anything else is an error there,
/// and so goes the general way.
impl<'de: 'a, 'a> FromObject<'de> for PostedPoints<'a> {
    fn from_object<A: MapAccess<'de>>(mut m: A) -> Result<Self, A::Error> {
        use serde::de::Error;
        let twice = || A::Error::custom("a field twice");
        let (mut pk, mut dk, mut points, mut time) = (None, None, None, None);
        while let Some(key) = m.next_key::<&'de str>()? {
            match key {
                "productKey" if pk.is_none() => pk = Some(m.next_value::<&'de str>()?),
                "deviceKey" if dk.is_none() => dk = Some(m.next_value::<&'de str>()?),
                "measurepoints" if points.is_none() => points = Some(m.next_value::<PointsIn<'a>>()?),
                "time" if time.is_none() => time = Some(m.next_value::<Value>()?),
                "productKey" | "deviceKey" | "measurepoints" | "time" => return Err(twice()),
                _ => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let (pk, dk) = (pk.filter(|k| !k.is_empty()), dk.filter(|k| !k.is_empty()));
        let keys = match (pk, dk) {
            (None, None) => None,
            (Some(pk), Some(dk)) => Some(DeviceKeys::new(pk, dk).map_err(A::Error::custom)?),
            _ => return Err(A::Error::custom("one key of two")),
        };
        let points = points.ok_or_else(|| A::Error::custom("no measurepoints"))?.0;
        Ok(PostedPoints { keys, points, time: time.as_ref().and_then(Value::as_u64) })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PostedPoints<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectOnly(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::cloud::testing::connected;
    use crate::cloud::Handled;
    use crate::registry::defaults::*;

    /// Runs `body` on `topic` through a cloud with the fast paths and one without, with
    /// and without a history: the same replies, and the same last values and history for
    /// every device.
    fn same_both_ways(conn: ConnId, topic: &str, body: &str) {
        for history in [1_000, 0] {
            let mut fast = connected(true, history);
            let mut general = connected(false, history);
            let payload = Bytes::from(body.to_owned());
            let a = fast.publish(conn, topic, &payload, 1_000);
            let b = general.publish(conn, topic, &payload, 1_000);
            let replies =
                |h: &Handled| h.replies.iter().map(|o| (o.topic.clone(), o.payload.clone())).collect::<Vec<_>>();
            assert_eq!(replies(&a), replies(&b), "{body}");
            for (k, da) in &fast.registry.devices {
                let db = &general.registry.devices[k];
                assert_eq!(da.measurepoints, db.measurepoints, "{k}: {body}");
                assert_eq!(da.history, db.history, "{k}: {body}");
                assert!(history > 0 || da.history.is_empty());
            }
        }
    }

    #[test]
    fn the_fast_batch_path_answers_and_stores_as_the_general_one() {
        let topic = format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/thing/measurepoint/post/batch");
        let resume_topic = format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/thing/measurepoint/resume/batch");
        let m = "thing.measurepoint.post.batch";
        let e = |i: usize, points: &str| {
            format!(r#"{{"productKey":"{SUB_PRODUCT}","deviceKey":"s{i}","measurepoints":{points}}}"#)
        };
        let batch = |entries: &[String], flags: &str| {
            format!(r#"{{"id":"7","version":"1.0","params":[{}],"method":"{m}"{flags}}}"#, entries.join(","))
        };
        let allow = r#","allowOfflineSubDevice":true"#;
        let ok = r#"{"temp":1.5,"status":2}"#;
        let bad = r#"{"temp":1.5,"nope":2}"#;
        let one = |entry: String| batch(&[entry], allow);
        let mut cases = vec![
            batch(&[e(0, ok), e(1, ok)], allow),
            batch(&[e(0, ok), e(1, ok)], ""),
            batch(&[e(0, ok), e(3, ok)], allow),
            batch(&[e(0, ok), e(1, bad)], allow),
            batch(&[e(0, ok), e(1, bad)], &format!(r#"{allow},"skipInvalidMeasurepoints":true"#)),
            batch(&[e(0, bad), e(1, "[1]")], allow),
            batch(&[e(0, ok), e(1, "[1]")], allow),
            batch(&[e(0, r#"{"status":2,"temp":1.5,"humidity":3}"#)], allow),
            batch(&[e(0, ok), e(1, r#"{"status":2.5,"temp":1}"#)], allow),
            batch(&[e(0, r#"{"zz":1,"aa":1}"#)], allow),
            batch(&[e(0, r#"{"temp":"hot","humidity":"wet","status":1}"#)], allow),
            batch(
                &[
                    e(0, ok),
                    e(1, r#"{"status":2,"temp":1}"#),
                    e(2, r#"{"temp":1.5,"voltage":{"value":2,"quality":9}}"#),
                ],
                allow,
            ),
            batch(&[e(0, r#"{"temp":"hot","temp":1.5}"#)], allow),
            batch(&[e(0, r#"{"temp":1.5,"temp":"hot"}"#)], allow),
            one(format!(r#"{{"productKey":"{SUB_PRODUCT}","measurepoints":{ok}}}"#)),
            batch(&[format!(r#"{{"measurepoints":{ok},"time":5}}"#)], ""),
            one(format!(r#"{{"productKey":"{SUB_PRODUCT}","deviceKey":null,"measurepoints":{ok}}}"#)),
            one(format!(r#"{{"productKey":"x","productKey":"{SUB_PRODUCT}","deviceKey":"s0","measurepoints":{ok}}}"#)),
            one(format!(r#"{{"productKey":"{SUB_PRODUCT}","deviceKey":"s0","measurepoints":{ok},"time":9,"x":[1]}}"#)),
            batch(&[e(2, ok)], r#","allowOfflineSubDevice":"true""#),
            batch(&[], ""),
            format!(r#"{{"id":"8","params":{{"a":1}},"method":"{m}"}}"#),
            format!(r#"{{"id":"9","params":null,"method":"{m}"}}"#),
            format!(r#"{{"id":"10","params":[{}],"method":"thing.measurepoint.post"}}"#, e(0, ok)),
        ];
        cases.push(cases[0].replace("\"7\"", "\"\\u0037\""));
        for body in &cases {
            same_both_ways(2, &topic, body);
        }
        let resume = batch(&[e(0, ok), e(1, ok)], allow).replace("post.batch", "resume.batch");
        same_both_ways(2, &resume_topic, &resume);
        // The first case went the fast way.
        let mut c = connected(true, 1_000);
        let gw = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY).unwrap();
        let (id, answer) = c.fast_batch(2, &gw, m, cases[0].as_bytes(), 1_000, false).unwrap();
        assert_eq!((id.as_str(), answer.code), ("7", 200));
    }

    #[test]
    fn a_batch_entry_with_empty_keys_is_the_topic_device_both_ways() {
        // As the vendor's Python SDK sends a batch for the device itself: `""` for the
        // keys it was not given (resume entries carry only the device key), and `""` flags.
        let gw = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY).unwrap();
        for (topic, method, entry) in [
            ("post/batch", "thing.measurepoint.post.batch", r#""productKey":"","deviceKey":"","#),
            ("resume/batch", "thing.measurepoint.resume.batch", r#""deviceKey":"","#),
        ] {
            let topic = format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/thing/measurepoint/{topic}");
            let body = format!(
                r#"{{"id":"3","version":"1.0","method":"{method}","params":[{{{entry}"measurepoints":{{"temp":4.5}},"time":1600000000000}}],"allowOfflineSubDevice":"","skipInvalidMeasurepoints":""}}"#
            );
            same_both_ways(2, &topic, &body);
            for fast in [true, false] {
                let mut c = connected(fast, 1_000);
                let h = c.publish(2, &topic, &Bytes::from(body.clone()), 1_000);
                let reply: Value = serde_json::from_slice(&h.replies[0].payload).unwrap();
                assert_eq!(reply["code"], 200, "{body}: {reply}");
                // Stored for the gateway itself: a post as its latest value, a resume
                // in its history only.
                let d = &c.registry.devices[&gw];
                let latest = d.measurepoints.iter().map(|(p, s)| (p.as_ref(), s));
                let history = d.history.iter().map(|(_, p, s)| (p.as_str(), s));
                assert!(latest.chain(history).any(|(p, s)| p == "temp" && s.value == json!(4.5)), "{body}");
            }
        }
    }

    #[test]
    fn the_fast_post_path_answers_and_stores_as_the_general_one() {
        let keys = DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap();
        let post = format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/measurepoint/post");
        let resume = format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/measurepoint/resume");
        let m = "thing.measurepoint.post";
        let cases: Vec<(&str, String)> = vec![
            (&post, format!(r#"{{"id":"1","version":"1.0","params":{{"measurepoints":{{"temp":1.5,"status":2}},"time":77}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":12,"params":{{"measurepoints":{{"voltage":{{"value":2.5,"quality":9}}}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"params":{{"measurepoints":{{"temp":1}},"time":"77"}},"method":"{m}"}}"#)),
            (&post, format!(" \n{{\"id\":\"a\\\"b\",\"params\":{{\"measurepoints\":{{\"te\\u006dp\":3.5}}}},\"method\":\"{m}\"}}")),
            (&post, format!(r#"{{"id":"2","params":{{"measurepoints":{{"temp":1,"temp":2}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"3","id":"4","params":{{"measurepoints":{{"temp":1}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"5","params":{{"measurepoints":{{"nope":1}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"6","params":{{"measurepoints":{{"temp":"hot"}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"6a","params":{{"measurepoints":{{"temp":"hot","temp":1}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"6b","params":{{"measurepoints":{{"status":3,"temp":1,"humidity":2.5}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"7","params":{{"measurepoints":[1]}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"8","params":[{{"temp":1}},1],"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"9","params":null,"method":"{m}"}}"#)),
            (&post, format!(r#"["10",{{"measurepoints":{{"temp":1}}}},"{m}"]"#)),
            (&post, r#"{"id":"11","params":{"measurepoints":{"temp":1}},"method":"thing.event.x.post"}"#.to_owned()),
            (&post, r#"{"id":"12","params":{"measurepoints":{"temp":1}}}"#.to_owned()),
            (&post, format!(r#"{{"id":"13","params":{{"measurepoints":{{"temp":1}},"extra":true}},"method":"{m}","x":1}}"#)),
            (&post, format!(r#"{{"id":"14","params":{{"measurepoints":{{}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":1.5e2,"params":{{"measurepoints":{{"temp":1}}}},"method":"{m}"}}"#)),
            (&post, "not json".to_owned()),
            (&resume, r#"{"id":"15","params":{"measurepoints":{"temp":4.5},"time":9},"method":"thing.measurepoint.resume"}"#.to_owned()),
        ];
        let mut took_fast = 0;
        for (topic, body) in &cases {
            same_both_ways(1, topic, body);
            let method = if topic.ends_with("resume") { "thing.measurepoint.resume" } else { m };
            took_fast +=
                usize::from(connected(true, 1_000).fast_post(&keys, method, body.as_bytes(), 1_000, false).is_some());
        }
        // Eight of the valid ones went the fast way (a duplicate envelope field, a point
        // named twice and a name with escapes go the general way, which accepts them too).
        assert_eq!(took_fast, 8);
    }
}
