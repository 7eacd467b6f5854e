//! Store-and-forward in the core: posts made while the session is down are kept in the
//! offline store and sent as resumes once it is up, each ending its caller's request.

mod support;

use std::time::Duration;

use enos_proto::codec::Publish;
use enos_proto::ops::{BatchEntry, MeasurepointBatchPost, MeasurepointPost, TagQuery};
use enos_proto::store::{FileStore, Fsync, OfflineStore, RecordStore, WhenFull};
use enos_proto::{ClientError, Event, Reply, RequestError, RequestId, RequestOptions, SubmitError};
use serde_json::json;
use support::*;

const RESUME: &str = "/sys/pk1234ab/dev_001/thing/measurepoint/resume";
const RESUME_BATCH: &str = "/sys/pk1234ab/dev_001/thing/measurepoint/resume/batch";
const POST: &str = "/sys/pk1234ab/dev_001/thing/measurepoint/post";

/// The `temp` of every stored post the cloud received, single or in a batch, in order.
fn resumed_values(p: &Pair) -> Vec<f64> {
    let mut v = Vec::new();
    for r in p.cloud.publishes() {
        let body = json(&r.payload);
        if r.topic == RESUME {
            v.push(body["params"]["measurepoints"]["temp"].as_f64().unwrap());
        } else if r.topic == RESUME_BATCH {
            for e in body["params"].as_array().unwrap() {
                v.push(e["measurepoints"]["temp"].as_f64().unwrap());
            }
        }
    }
    v
}

fn with_store(store: OfflineStore) -> enos_proto::Config {
    let mut c = config();
    c.offline_store = Some(store);
    c
}

fn points(v: f64) -> serde_json::Map<String, serde_json::Value> {
    json!({ "temp": v }).as_object().unwrap().clone()
}

/// The pair with its session lost and the cloud unreachable.
fn offline(store: OfflineStore) -> Pair {
    let mut p = Pair::connected(with_store(store));
    p.cloud.reachable = false;
    p.cut();
    assert!(!p.client.is_connected());
    p
}

/// The cloud is back, and the client dials it without waiting out its back-off.
fn back(p: &mut Pair) {
    p.cloud.reachable = true;
    p.client.connect(p.now);
    p.drive();
    assert!(p.client.is_connected());
}

fn post(p: &mut Pair, v: f64) -> RequestId {
    let id = p.client.request(p.now, MeasurepointPost::new(points(v)), RequestOptions::default()).unwrap();
    p.drive();
    id
}

fn ended(p: &Pair, id: RequestId) -> bool {
    !p.responses(id).is_empty()
}

#[test]
fn posts_made_while_down_are_resumed_in_order_with_their_own_time_and_end_their_requests() {
    let store = OfflineStore::memory();
    let mut p = offline(store.clone());
    let mut made = Vec::new();
    for i in 0..5 {
        made.push((post(&mut p, f64::from(i)), p.now.unix_ms));
        p.advance(Duration::from_millis(700));
    }
    assert_eq!(store.len(), 5);
    assert!(made.iter().all(|(id, _)| !ended(&p, *id)), "a stored post waits for its resume");
    back(&mut p);
    // Together, in one batch resume of the device's own points (no keys in its entries).
    let resumes = pubs_to(&p.cloud, RESUME_BATCH);
    assert_eq!(resumes.len(), 1, "{:?}", p.cloud.publishes());
    assert!(pubs_to(&p.cloud, POST).is_empty(), "no stored post goes out as a post");
    let v = json(&resumes[0].payload);
    assert_eq!(v["method"], "thing.measurepoint.resume.batch");
    assert_eq!(v["allowOfflineSubDevice"], true);
    for (i, (id, unix_ms)) in made.iter().enumerate() {
        assert_eq!(v["params"][i], json!({"measurepoints": {"temp": i as f64}, "time": unix_ms}));
        match p.response(*id) {
            Ok(Reply::Json(j)) => assert_eq!(j.code, 200),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(store.len(), 0, "delivered records are forgotten");
    let s = p.client.offline_stats();
    assert_eq!((s.stored, s.delivered, s.rejected, s.dropped, s.retried), (5, 5, 0, 0, 0));
}

#[test]
fn without_a_store_a_post_made_while_down_waits_in_the_queue_as_a_post() {
    let mut p = Pair::connected(config());
    p.cloud.reachable = false;
    p.cut();
    let id = post(&mut p, 1.0);
    p.cloud.reachable = true;
    p.advance(Duration::from_secs(10));
    assert!(p.response(id).is_ok());
    assert_eq!(pubs_to(&p.cloud, POST).len(), 1);
    assert!(pubs_to(&p.cloud, RESUME).is_empty());
}

#[test]
fn a_stored_post_has_no_deadline_while_stored() {
    let mut p = offline(OfflineStore::memory());
    let id = post(&mut p, 1.0);
    // Far past the request timeout, still offline.
    p.advance(Duration::from_secs(600));
    assert!(!ended(&p, id));
    back(&mut p);
    assert!(p.response(id).is_ok());
}

#[test]
fn other_requests_made_while_down_are_not_stored() {
    let store = OfflineStore::memory();
    let mut p = offline(store.clone());
    let id = p.client.request(p.now, TagQuery::new(Vec::<String>::new()), RequestOptions::default()).unwrap();
    assert_eq!(store.len(), 0);
    back(&mut p);
    assert!(p.response(id).is_ok());
}

#[test]
fn a_resume_that_times_out_is_sent_again_and_ends_its_caller_once() {
    let store = OfflineStore::memory();
    let mut p = offline(store.clone());
    let id = post(&mut p, 1.0);
    p.cloud.replies = Replies::Hold;
    back(&mut p);
    assert_eq!(p.cloud.held.len(), 1);
    p.cloud.held.clear();
    // Its resume times out: the record is read again and sent once more.
    p.advance(Duration::from_secs(31));
    assert!(!ended(&p, id), "the caller waits for a verdict");
    assert_eq!(p.cloud.held.len(), 1, "sent again");
    let again: Publish = p.cloud.held.remove(0);
    p.cloud.answer(&again, "{}");
    p.drive();
    assert!(p.response(id).is_ok());
    assert_eq!(store.len(), 0);
    let s = p.client.offline_stats();
    assert_eq!((s.delivered, s.retried), (1, 1));
}

#[test]
fn a_refused_record_ends_its_caller_with_the_code_and_is_forgotten() {
    let store = OfflineStore::memory();
    let mut p = offline(store.clone());
    let id = post(&mut p, 1.0);
    p.cloud.replies = Replies::Hold;
    back(&mut p);
    let r = p.cloud.held.remove(0);
    p.cloud.reply(&r.topic, &envelope_id(&r), 1204, "null");
    p.drive();
    match p.response(id) {
        Ok(Reply::Json(j)) => assert_eq!(j.code, 1204),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.len(), 0);
    assert_eq!(p.client.offline_stats().rejected, 1);
}

#[test]
fn a_full_store_refuses_new_posts_or_drops_the_oldest_as_chosen() {
    // Refuse: the caller hears it at once, nothing stored is lost.
    let store = OfflineStore::memory().max_records(3);
    let mut p = offline(store.clone());
    let kept: Vec<RequestId> = (0..3).map(|i| post(&mut p, f64::from(i))).collect();
    let e = p.client.request(p.now, MeasurepointPost::new(points(9.0)), RequestOptions::default()).unwrap_err();
    assert!(matches!(e, SubmitError::OfflineStoreFull { records: 3, .. }), "{e:?}");
    back(&mut p);
    assert!(kept.iter().all(|id| p.response(*id).is_ok()));

    // Drop the oldest: its caller hears it, and an event says which record.
    let store = OfflineStore::memory().max_records(3).when_full(WhenFull::DropOldest);
    let mut p = offline(store.clone());
    let ids: Vec<RequestId> = (0..5).map(|i| post(&mut p, f64::from(i))).collect();
    p.drive();
    assert_eq!(store.len(), 3);
    assert_eq!(p.response(ids[0]), Err(RequestError::Dropped));
    assert_eq!(p.response(ids[1]), Err(RequestError::Dropped));
    assert_eq!(p.count_events(|e| matches!(e, Event::Error(ClientError::OfflineDropped { .. }))), 2);
    back(&mut p);
    assert_eq!(resumed_values(&p), vec![2.0, 3.0, 4.0]);
    assert!(ids[2..].iter().all(|id| p.response(*id).is_ok()));
    assert_eq!(p.client.offline_stats().dropped, 2);

    // By bytes too.
    let store = OfflineStore::memory().max_bytes(200);
    let mut p = offline(store.clone());
    let mut n = 0;
    while p.client.request(p.now, MeasurepointPost::new(points(1.0)), RequestOptions::default()).is_ok() {
        n += 1;
    }
    assert!(n >= 1 && store.bytes() <= 200, "{n} records, {} bytes", store.bytes());
}

#[test]
fn resumes_in_transit_are_bounded_by_the_window() {
    let store = OfflineStore::memory();
    let mut c = with_store(store.clone());
    c.max_inflight = 8;
    let mut p = Pair::connected(c);
    p.cloud.reachable = false;
    p.cut();
    let ids: Vec<RequestId> = (0..2000).map(|i| post(&mut p, f64::from(i))).collect();
    p.cloud.replies = Replies::Hold;
    back(&mut p);
    let entries = |r: &Publish| json(&r.payload)["params"].as_array().map_or(1, Vec::len);
    let mut answered = 0;
    while !p.cloud.held.is_empty() {
        let out: usize = p.cloud.held.iter().map(entries).sum();
        assert!(out <= 8, "{out} records out at once");
        let r = p.cloud.held.remove(0);
        answered += entries(&r);
        p.cloud.answer(&r, "{}");
        p.drive();
    }
    assert_eq!(answered, 2000);
    assert!(ids.iter().all(|id| p.response(*id).is_ok()));
    assert_eq!(resumed_values(&p), (0..2000).map(f64::from).collect::<Vec<_>>(), "oldest first");
}

#[test]
fn records_of_an_earlier_run_are_delivered_and_a_killed_run_loses_nothing_stored() {
    let dir = std::env::temp_dir().join(format!("enos-offline-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("offline.log");
    // The first run stores three posts and is killed: no close, no goodbye.
    {
        let store = OfflineStore::new(FileStore::open(&path, Fsync::Always).unwrap());
        let mut p = offline(store);
        for i in 0..3 {
            post(&mut p, f64::from(i));
        }
        std::mem::forget(p);
    }
    // The next run finds them and sends them; nobody waits for them. Their batch is
    // refused: each goes again alone, and the one refused alone is reported.
    let store = OfflineStore::new(FileStore::open(&path, Fsync::Always).unwrap());
    assert_eq!(store.len(), 3);
    let mut p = Pair::new(with_store(store.clone()));
    p.cloud.replies = Replies::Hold;
    p.drive();
    assert_eq!(p.cloud.held.len(), 1, "one batch");
    let batch = p.cloud.held.remove(0);
    p.cloud.reply(&batch.topic, &envelope_id(&batch), 1204, "null");
    p.drive();
    assert_eq!(store.len(), 3, "a batch's refusal forgets nothing");
    assert_eq!(p.cloud.held.len(), 3, "each alone");
    assert!(p.cloud.held.iter().all(|r| r.topic == RESUME));
    let held = std::mem::take(&mut p.cloud.held);
    p.cloud.answer(&held[0], "{}");
    p.cloud.reply(&held[1].topic, &envelope_id(&held[1]), 1204, "null");
    p.cloud.answer(&held[2], "{}");
    p.drive();
    assert_eq!(store.len(), 0);
    assert_eq!(p.count_events(|e| matches!(e, Event::Response { .. })), 0);
    assert_eq!(
        p.count_events(|e| matches!(e, Event::Error(ClientError::OfflineRejected { code: 1204, .. }))),
        1,
        "{:?}",
        p.events
    );
    drop(p);
    let reopened = FileStore::open(&path, Fsync::Always).unwrap();
    assert_eq!(reopened.len(), 0, "delivered records stay forgotten");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn closing_ends_stored_posts_and_keeps_their_records() {
    let store = OfflineStore::memory();
    let mut p = offline(store.clone());
    let id = post(&mut p, 1.0);
    p.client.close(p.now);
    p.drive();
    assert_eq!(p.response(id), Err(RequestError::Closed));
    assert_eq!(store.len(), 1, "the record stays for the next start");
    p.cloud.reachable = true;
    p.client.connect(p.now);
    p.drive();
    assert_eq!(pubs_to(&p.cloud, RESUME).len(), 1);
    assert_eq!(store.len(), 0);
}

#[test]
fn a_gateway_resumes_a_sub_device_post_as_a_batch_entry_that_allows_it_offline() {
    let mut c = gateway_config();
    c.offline_store = Some(OfflineStore::memory());
    let mut p = Pair::connected(c);
    let sub = keys("subPK001", "sub_01");
    p.cloud.reachable = false;
    p.cut();
    let opts = RequestOptions::new().target(sub.clone());
    let single = p.client.request(p.now, MeasurepointPost::new(points(1.0)), opts).unwrap();
    let batch = p
        .client
        .request(
            p.now,
            MeasurepointBatchPost::new(vec![BatchEntry::of(sub.clone(), points(2.0), Some(5))]),
            RequestOptions::default(),
        )
        .unwrap();
    let at = p.now.unix_ms;
    back(&mut p);
    let resumes = pubs_to(&p.cloud, "/sys/gwPK0001/gw_dev_01/thing/measurepoint/resume/batch");
    assert_eq!(resumes.len(), 2, "{:?}", p.cloud.publishes());
    let first = json(&resumes[0].payload);
    assert_eq!(first["method"], "thing.measurepoint.resume.batch");
    assert_eq!(
        first["params"],
        json!([{"productKey": "subPK001", "deviceKey": "sub_01", "measurepoints": {"temp": 1.0}, "time": at}])
    );
    assert_eq!(first["allowOfflineSubDevice"], true);
    let second = json(&resumes[1].payload);
    assert_eq!(second["params"][0]["time"], 5);
    assert_eq!(second["allowOfflineSubDevice"], true);
    assert!(p.response(single).is_ok() && p.response(batch).is_ok());
}

#[test]
fn a_post_cut_off_before_its_puback_moves_to_the_store_and_waits_for_its_resume() {
    let store = OfflineStore::memory();
    let mut p = Pair::connected(with_store(store.clone()));
    p.cloud.auto_puback = false;
    p.cloud.replies = Replies::Hold;
    let unacked = post(&mut p, 1.0);
    assert_eq!(p.cloud.held.len(), 1, "on the wire, unacknowledged");
    p.cloud.held.clear();
    p.cloud.reachable = false;
    p.cut();
    assert_eq!(store.len(), 1, "moved to the store with the link");
    // Long past its timeout, the outage goes on: it waits.
    p.advance(Duration::from_secs(600));
    assert!(!ended(&p, unacked));
    p.cloud.auto_puback = true;
    p.cloud.replies = Replies::Ok;
    back(&mut p);
    let resumes = pubs_to(&p.cloud, RESUME);
    assert_eq!(resumes.len(), 1);
    assert_eq!(json(&resumes[0].payload)["params"]["measurepoints"], json!({"temp": 1.0}));
    assert!(p.response(unacked).is_ok());
    assert_eq!(store.len(), 0);
}

#[test]
fn a_post_the_cloud_acknowledged_before_the_cut_is_not_stored_again() {
    let store = OfflineStore::memory();
    let mut p = Pair::connected(with_store(store.clone()));
    p.cloud.replies = Replies::Hold;
    let id = post(&mut p, 1.0);
    // PUBACKed: the cloud has it; only its reply is missing.
    p.cut();
    assert_eq!(store.len(), 0);
    p.advance(Duration::from_secs(31));
    assert!(matches!(p.response(id), Err(RequestError::TimedOut(_))));
    assert!(pubs_to(&p.cloud, RESUME).is_empty());
}

#[test]
fn resumes_cut_off_by_a_lost_link_go_again_at_once_on_the_next_session() {
    let store = OfflineStore::memory();
    let mut p = offline(store.clone());
    let ids: Vec<RequestId> = (0..3).map(|i| post(&mut p, f64::from(i))).collect();
    p.cloud.replies = Replies::Hold;
    back(&mut p);
    assert_eq!(p.cloud.held.len(), 1, "one batch of three");
    p.cloud.held.clear();
    // The link drops with their replies: no waiting for their timeouts.
    p.cut();
    back(&mut p);
    assert_eq!(p.cloud.held.len(), 1, "sent again on the new session");
    assert_eq!(json(&p.cloud.held[0].payload)["params"].as_array().unwrap().len(), 3);
    for r in std::mem::take(&mut p.cloud.held) {
        p.cloud.answer(&r, "{}");
    }
    p.drive();
    assert!(ids.iter().all(|id| p.response(*id).is_ok()));
    assert_eq!((store.len(), p.client.offline_stats().retried), (0, 3));
}

#[test]
fn single_posts_go_together_up_to_a_hundred_a_resume() {
    let mut p = offline(OfflineStore::memory());
    let ids: Vec<RequestId> = (0..250).map(|i| post(&mut p, f64::from(i))).collect();
    back(&mut p);
    let sizes: Vec<usize> =
        pubs_to(&p.cloud, RESUME_BATCH).iter().map(|r| json(&r.payload)["params"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    assert!(ids.iter().all(|id| p.response(*id).is_ok()));
}
