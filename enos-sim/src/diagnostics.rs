//! The shape checks of the device's reports about itself (extensions spec E5, E10): log,
//! network status and connection state. A report of the wrong shape is refused with 1220;
//! one of the right shape is kept on its device for the test API.

use serde_json::{Map, Value};

/// Why `params` of a `thing.log.post` cannot be taken, if they cannot.
pub(crate) fn check_log(params: &Value) -> Result<(), &'static str> {
    let p = params.as_object().ok_or("params is not an object")?;
    if !p.get("logs").is_some_and(Value::is_object) {
        return Err("logs is not an object");
    }
    optional(p, "time", Value::is_u64)
}

/// Why `params` of a `network.status.report` cannot be taken, if they cannot.
pub(crate) fn check_network_status(params: &Value) -> Result<(), &'static str> {
    let p = params.as_object().ok_or("params is not an object")?;
    if !p.get("reportTime").is_some_and(Value::is_u64) {
        return Err("reportTime is not epoch milliseconds");
    }
    optional(p, "collectTime", Value::is_u64)?;
    for k in ["rssi", "snr", "packetLossRate"] {
        optional(p, k, Value::is_number)?;
    }
    for k in ["networkType", "errorInfo"] {
        optional(p, k, Value::is_string)?;
    }
    Ok(())
}

/// Why `params` of a `connection.state.post` cannot be taken, if they cannot.
pub(crate) fn check_connection_state(params: &Value) -> Result<(), &'static str> {
    let p = params.as_object().ok_or("params is not an object")?;
    let full = p.get("isFull").and_then(Value::as_bool).ok_or("isFull is not a boolean")?;
    let nodes = p.get("nodes").and_then(Value::as_array).ok_or("nodes is not an array")?;
    for n in nodes {
        let n = n.as_object().ok_or("a node is not an object")?;
        if n.get("nodeId").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err("a node has no nodeId");
        }
        if !n.get("state").and_then(Value::as_u64).is_some_and(|s| (1..=3).contains(&s)) {
            return Err("a node's state is not 1, 2 or 3");
        }
        for k in ["assetId", "name", "info"] {
            optional(n, k, Value::is_string)?;
        }
    }
    let relations = p.get("relations").and_then(Value::as_object).ok_or("relations is not an object")?;
    let children = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    if !relations.values().all(children) {
        return Err("a relation is not a list of node ids");
    }
    if !full && !relations.is_empty() {
        return Err("relations in an update (isFull false)");
    }
    optional(p, "reportTime", Value::is_u64)
}

fn optional(p: &Map<String, Value>, key: &str, ok: fn(&Value) -> bool) -> Result<(), &'static str> {
    match p.get(key) {
        Some(v) if !ok(v) => Err("a field has the wrong type"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_report_of_the_wrong_shape_is_refused() {
        assert!(check_log(&json!({"logs": {"level": "info"}, "time": 1})).is_ok());
        assert!(check_log(&json!({"logs": "text"})).is_err());
        assert!(check_network_status(&json!({"reportTime": 1, "rssi": -60.5, "networkType": "4G"})).is_ok());
        assert!(check_network_status(&json!({"rssi": -60.5})).is_err());
        assert!(check_network_status(&json!({"reportTime": 1, "rssi": "strong"})).is_err());
        let node = |s: u64| json!({"nodeId": "#1", "state": s});
        let full = json!({"isFull": true, "nodes": [node(1)], "relations": {"#1": ["#2"]}, "reportTime": 1});
        assert!(check_connection_state(&full).is_ok());
        let update = json!({"isFull": false, "nodes": [node(3)], "relations": {}, "reportTime": 1});
        assert!(check_connection_state(&update).is_ok());
        let bad_state = json!({"isFull": false, "nodes": [node(4)], "relations": {}});
        assert!(check_connection_state(&bad_state).is_err());
        let update_with_tree = json!({"isFull": false, "nodes": [node(1)], "relations": {"#1": ["#2"]}});
        assert!(check_connection_state(&update_with_tree).is_err());
        let no_id = json!({"isFull": true, "nodes": [{"nodeId": "", "state": 1}], "relations": {}});
        assert!(check_connection_state(&no_id).is_err());
    }
}
