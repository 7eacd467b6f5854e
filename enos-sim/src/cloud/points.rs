//! Measure points (spec §5): posts and resumes, of one device or in a gateway's batch,
//! checked against the product's model and stored as last values and in a bounded
//! history. This is the general way, from a JSON tree; [`super::fast`] reads the common
//! requests without one and stores them through the same functions.

use std::borrow::Cow;
use std::collections::BTreeMap;

use enos_proto::DeviceKeys;
use serde_json::{Map, Value};

use super::envelope::{keys_of, Answer};
use super::{Cloud, ConnId};
use crate::registry::{DataType, Registry, Stamped};

/// Measure points posted for one device, however they were read (the general way or the
/// fast one): a post's, or one entry of a batch's.
pub(super) struct PostedPoints<'p> {
    /// The sub-device they are for, or `None` for the device that posts them.
    pub(super) keys: Option<DeviceKeys>,
    /// The points in the order sent; a value is borrowed from a JSON tree, or owned.
    pub(super) points: Vec<(&'p str, Cow<'p, Value>)>,
    /// Their time (epoch milliseconds), when the request gives one.
    pub(super) time: Option<u64>,
}

/// What a batch post's envelope asks besides its entries.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BatchFlags {
    /// `allowOfflineSubDevice`: entries for sub-devices in the topology that are not
    /// logged in are taken.
    pub(super) allow_offline: bool,
    /// `skipInvalidMeasurepoints`: points the model refuses are left out, not refused.
    pub(super) skip_invalid: bool,
}

/// Whether a measure point model accepts this value.
pub(super) fn accepts_point(model: Option<&BTreeMap<String, DataType>>, point: &str, value: &Value) -> bool {
    model.and_then(|m| m.get(point)).is_some_and(|t| accepts_value(*t, value))
}

/// Whether a measure point of type `t` accepts this value, with or without a quality.
fn accepts_value(t: DataType, value: &Value) -> bool {
    // A value with a quality is {"value": v, "quality": q}.
    let inner = match value {
        Value::Object(o) if o.contains_key("value") => &o["value"],
        v => v,
    };
    t.accepts(inner)
}

/// The types of a batch's measure points by their place in an entry. The entries of one
/// product usually name the same points in the same order, so a name is looked up in the
/// model once per batch rather than once per entry.
struct PointTypes<'m> {
    model: Option<&'m BTreeMap<String, DataType>>,
    by_place: Vec<(&'m str, DataType)>,
}

impl PointTypes<'_> {
    /// The type of the point `name`, the `place`-th of its entry; `None` when the model has
    /// no such point.
    fn of(&mut self, place: usize, name: &str) -> Option<DataType> {
        if let Some((known, t)) = self.by_place.get(place) {
            if *known == name {
                return Some(*t);
            }
        }
        let (known, t) = self.model?.get_key_value(name)?;
        if let Some(slot) = self.by_place.get_mut(place) {
            *slot = (known.as_str(), *t);
        } else if place == self.by_place.len() {
            self.by_place.push((known.as_str(), *t));
        }
        Some(*t)
    }
}

impl Cloud {
    /// `thing.measurepoint.post` and `.resume` read from a JSON tree: every point checked
    /// against the model, then stored.
    pub(super) fn post(&mut self, keys: &DeviceKeys, params: &Value, now_ms: u64, resume: bool) -> Answer {
        let Some(points) = params.get("measurepoints").and_then(Value::as_object) else {
            return Answer::err(1206, "Measurepoint post data format error");
        };
        let time = params.get("time").and_then(Value::as_u64).unwrap_or(now_ms);
        if let Err(k) = self.check_points(keys, points) {
            return Answer::err(1204, format!("Model validate failed: measurepoint {k}"));
        }
        let points = points.iter().map(|(k, v)| (k.as_str(), Cow::Borrowed(v)));
        self.store_points(keys, points, time, resume);
        Answer::done()
    }

    /// `Err(point)` for the first point the model does not accept.
    fn check_points(&self, keys: &DeviceKeys, points: &Map<String, Value>) -> Result<(), String> {
        let model = self.point_model(keys);
        match points.iter().find(|(k, v)| !accepts_point(model, k, v)) {
            Some((k, _)) => Err(k.clone()),
            None => Ok(()),
        }
    }

    /// The measure points of the model of `keys`'s product.
    pub(super) fn point_model(&self, keys: &DeviceKeys) -> Option<&BTreeMap<String, DataType>> {
        self.registry.products.get(keys.product_key()).map(|p| &p.tsl.measurepoints)
    }

    /// Stores points as a post's last values (not a resume's) and in the history, where a
    /// post's points go in name order however they were sent; a value the request owns is
    /// moved, not copied, where one place takes it.
    pub(super) fn store_points<'a>(
        &mut self,
        keys: &DeviceKeys,
        points: impl Iterator<Item = (&'a str, Cow<'a, Value>)>,
        time: u64,
        resume: bool,
    ) {
        let limit = self.registry.history_limit;
        let Registry { devices, point_names, .. } = &mut self.registry;
        let Some(d) = devices.get_mut(keys) else { return };
        if limit == 0 {
            d.history.clear();
        }
        let mut points: Vec<(&str, Cow<'_, Value>)> = points.collect();
        if limit > 0 {
            points.sort_by(|a, b| a.0.cmp(b.0));
        }
        for (k, v) in points {
            let (last, history) = match (resume, limit > 0) {
                (false, true) => (Some(v.clone().into_owned()), Some(v.into_owned())),
                (false, false) => (Some(v.into_owned()), None),
                (true, true) => (None, Some(v.into_owned())),
                (true, false) => (None, None),
            };
            if let Some(value) = last {
                // The point's shared name is looked up only the first time the device stores it.
                match d.measurepoints.get_mut(k) {
                    Some(last) => *last = Stamped { value, time },
                    None => {
                        d.measurepoints.insert(crate::registry::intern(point_names, k), Stamped { value, time });
                    }
                }
            }
            if let Some(value) = history {
                d.remember(resume, k, Stamped { value, time }, limit);
            }
        }
    }

    /// `thing.measurepoint.post.batch` and `.resume.batch` read from a JSON tree.
    pub(super) fn batch(
        &mut self,
        conn: ConnId,
        topic_keys: &DeviceKeys,
        params: &Value,
        env: &Map<String, Value>,
        now_ms: u64,
        resume: bool,
    ) -> Answer {
        let Some(list) = params.as_array() else { return Answer::err(1206, "Measurepoint post data format error") };
        let entries = list.iter().map(|e| {
            let points = e.get("measurepoints").and_then(Value::as_object)?;
            // An empty key counts as absent: the vendor's Python SDK sends `""` for the
            // keys it was not given.
            let key = |name| e.get(name).filter(|v| v.as_str() != Some(""));
            let keys = match (key("productKey"), key("deviceKey")) {
                (None, None) => None,
                _ => Some(keys_of(e)?),
            };
            let points = points.iter().map(|(k, v)| (k.as_str(), Cow::Borrowed(v))).collect();
            Some(PostedPoints { keys, points, time: e.get("time").and_then(Value::as_u64) })
        });
        let flag = |name: &str| env.get(name).and_then(Value::as_bool).unwrap_or(false);
        let flags =
            BatchFlags { allow_offline: flag("allowOfflineSubDevice"), skip_invalid: flag("skipInvalidMeasurepoints") };
        self.batch_entries(conn, topic_keys, entries, flags, now_ms, resume)
    }

    /// A batch post's entries, however they were read (`None`: an entry that could not
    /// be, 1206): everything is checked, in order, before anything is stored.
    pub(super) fn batch_entries<'p>(
        &mut self,
        conn: ConnId,
        topic_keys: &DeviceKeys,
        entries: impl ExactSizeIterator<Item = Option<PostedPoints<'p>>>,
        flags: BatchFlags,
        now_ms: u64,
        resume: bool,
    ) -> Answer {
        // What the gateway may post for, looked up once per batch; the model once per run
        // of entries of one product.
        let in_topology = self.registry.topology.get(topic_keys);
        let logged_in = self.sessions.subs_of(conn);
        let mut model: Option<(&str, PointTypes<'_>)> = None;
        let mut accepted = Vec::with_capacity(entries.len());
        for e in entries {
            let Some(PostedPoints { keys, mut points, time }) = e else {
                return Answer::err(1206, "Measurepoint post data format error");
            };
            let device = keys.unwrap_or_else(|| topic_keys.clone());
            if device != *topic_keys {
                let permitted = in_topology.is_some_and(|t| t.contains(&device))
                    && (flags.allow_offline || logged_in.is_some_and(|s| s.contains(&device)));
                if !permitted {
                    return Answer::err(1212, "No sub-device permission");
                }
            }
            let types = match &mut model {
                Some((pk, types)) if *pk == device.product_key() => types,
                _ => {
                    let p = self.registry.products.get_key_value(device.product_key());
                    let m = p.map(|(_, p)| &p.tsl.measurepoints);
                    let pk = p.map_or("", |(pk, _)| pk.as_str());
                    &mut model.insert((pk, PointTypes { model: m, by_place: Vec::new() })).1
                }
            };
            let mut place = 0;
            let mut accepts = |k: &str, v: &Value| {
                place += 1;
                types.of(place - 1, k).is_some_and(|t| accepts_value(t, v))
            };
            if flags.skip_invalid {
                points.retain(|(k, v)| accepts(k, v));
            } else if let Some(k) = points.iter().filter(|(k, v)| !accepts(k, v)).map(|(k, _)| *k).min() {
                // The first refused in name order, as the general way names it.
                return Answer::err(1204, format!("Model validate failed: measurepoint {k}"));
            }
            accepted.push((device, points, time.unwrap_or(now_ms)));
        }
        for (device, points, time) in accepted {
            self.store_points(&device, points.into_iter(), time, resume);
        }
        Answer::done()
    }
}
