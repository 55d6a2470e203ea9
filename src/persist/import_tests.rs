//! Import: Mosquitto's data as shardmq records, rebuilt into the state the broker
//! restores, and the file work (moving Mosquitto's file aside, refusing a full store).

use bytes::Bytes;

use super::*;
use crate::persist::mosquitto_db::tests::{v234_file, MOSQUITTO_2_0_11};
use crate::persist::State;

fn fixture() -> MosquittoDb {
    mdb::parse(&Bytes::from_static(MOSQUITTO_2_0_11)).unwrap()
}

/// "Now" 10 s after the fixture's sess5 disconnected (it expires 3600 s after that).
fn fixture_now_ms(db: &MosquittoDb) -> u64 {
    let expires = db.clients[1].session_expiry_time;
    u64::try_from(expires - 3600 + 10).unwrap() * 1000
}

/// The fixture's clients connected on port 18840: listener 0 here.
fn first_listener(port: u16) -> Option<u32> {
    (port == 18840).then_some(0)
}

fn state_of(records: Vec<Record>) -> State {
    let mut s = State::default();
    for r in records {
        s.apply(r);
    }
    s
}

#[test]
fn mosquittos_file_becomes_the_state_the_broker_restores() {
    let db = fixture();
    let now_ms = fixture_now_ms(&db);
    let (records, summary) = to_records(&db, now_ms, &first_listener).unwrap();
    assert_eq!(
        summary,
        Summary {
            retained: 3,
            sessions: 2,
            subscriptions: 2,
            queued: 4,
            ..Summary::default()
        }
    );
    let state = state_of(records);
    let r_c = &state.retained[&ByteStr::from("r/c")];
    assert!(r_c.retain);
    assert_eq!(r_c.qos, QoS::AtLeastOnce);
    assert_eq!(r_c.payload, "retained-c");
    assert_eq!(
        r_c.properties.user_properties,
        [(ByteStr::from("k"), ByteStr::from("v"))]
    );
    assert_eq!(r_c.properties.content_type, Some(ByteStr::from("text/x")));
    let sess1 = &state.sessions[&ByteStr::from("sess1")];
    assert_eq!((sess1.version, sess1.expiry), (4, EXPIRY_NEVER));
    assert_eq!(sess1.offline_at, Some(now_ms));
    assert_eq!(sess1.subscriptions[&ByteStr::from("q/#")], (1, 0));
    let payloads: Vec<&[u8]> = sess1
        .messages
        .values()
        .map(|m| m.publish.payload.as_ref())
        .collect();
    assert_eq!(payloads, [&b"queued-1"[..], b"queued-2", b"queued-3"]);
    assert!(sess1
        .messages
        .values()
        .all(|m| m.qos == QoS::AtLeastOnce && m.received == now_ms));
    assert!(sess1.inflight.is_empty(), "queued, not sent");
    let sess5 = &state.sessions[&ByteStr::from("sess5")];
    assert_eq!((sess5.version, sess5.expiry), (5, 3590));
    assert_eq!(sess5.subscriptions[&ByteStr::from("v5/#")], (2, 0));
    let m = sess5.messages.values().next().unwrap();
    assert_eq!(
        (m.qos, m.publish.payload.as_ref()),
        (QoS::ExactlyOnce, &b"v5-queued"[..])
    );
    let left = m.publish.properties.message_expiry_interval.unwrap();
    assert!(left <= 600 && left > 500, "{left}");
}

/// Mosquitto 2 keeps the user name and listener port of a session: the ACL of that user
/// follows the imported session.
#[test]
fn a_sessions_user_is_imported_with_its_listener() {
    let mut db = fixture();
    db.clients[0].username = Some(Bytes::from_static(b"alice"));
    db.clients[1].username = Some(Bytes::from_static(b"bob"));
    db.clients[1].listener_port = 9999;
    let (records, summary) = to_records(&db, fixture_now_ms(&db), &first_listener).unwrap();
    assert_eq!(summary.users_without_listener, 1);
    let state = state_of(records);
    let user = state.sessions[&ByteStr::from("sess1")]
        .user
        .clone()
        .unwrap();
    assert_eq!(
        (user.listener, user.username),
        (0, Some(ByteStr::from("alice")))
    );
    assert_eq!(state.sessions[&ByteStr::from("sess5")].user, None);
}

/// Mosquitto 2.0.0 to 2.0.15 write a client without a user name after one with it from
/// the stale buffer: the previous name, its NUL and heap bytes, under a byte-swapped
/// length. That is no user.
#[test]
fn a_user_name_from_mosquittos_stale_buffer_is_no_user() {
    let mut db = fixture();
    let mut garbage = b"alice".to_vec();
    garbage.extend_from_slice(&[0; 1275]);
    db.clients[1].username = Some(Bytes::from(garbage));
    let (records, summary) = to_records(&db, fixture_now_ms(&db), &first_listener).unwrap();
    assert_eq!(summary.stale_users, 1);
    assert!(
        summary.to_string().contains("another client's buffer"),
        "{summary}"
    );
    assert_eq!(
        state_of(records).sessions[&ByteStr::from("sess5")].user,
        None
    );
}

#[test]
fn expired_sessions_and_messages_are_left_out_and_counted() {
    let db = fixture();
    // Two hours later: sess5 (3600 s) and its message (600 s) have expired.
    let now_ms = fixture_now_ms(&db) + 7_200_000;
    let (records, summary) = to_records(&db, now_ms, &first_listener).unwrap();
    assert_eq!((summary.sessions, summary.expired_sessions), (1, 1));
    assert_eq!(summary.expired_messages, 1);
    assert_eq!(summary.subscriptions, 1);
    let state = state_of(records);
    assert!(!state.sessions.contains_key(&ByteStr::from("sess5")));
    assert!(
        summary.to_string().contains("left out: 1 expired messages"),
        "{summary}"
    );
}

#[test]
fn an_inflight_message_keeps_its_packet_id() {
    for version in [2, 3, 4] {
        let db = mdb::parse(&v234_file(version)).unwrap();
        let (records, summary) = to_records(&db, 1_000, &first_listener).unwrap();
        assert_eq!(
            (summary.inflight, summary.queued, summary.retained),
            (1, 0, 1)
        );
        let state = state_of(records);
        let s = &state.sessions[&ByteStr::from("old-client")];
        assert_eq!(s.expiry, EXPIRY_NEVER, "formats before 5 have no expiry");
        let (&seq, _) = s.messages.iter().next().unwrap();
        assert_eq!(s.inflight[&seq], (7, stage::PUBACK));
        assert_eq!(s.subscriptions[&ByteStr::from("old/#")], (1, 0));
    }
}

#[test]
fn incoming_qos2_awaiting_pubrel_is_delivered_and_its_id_kept_for_the_pubrel() {
    let mut db = fixture();
    let before = to_records(&db, fixture_now_ms(&db), &first_listener)
        .unwrap()
        .1;
    // A client "pubq2" sent QoS 2 PUBLISH id 77 on the topic of the queued q/x message
    // and got PUBREC; sess1 (q/# at QoS 1) subscribes to it, sess5 (v5/#) does not.
    let mut c = db.client_messages[0].clone();
    c.client_id = Bytes::from_static(b"pubq2");
    (c.direction, c.qos, c.state, c.mid) = (0, 2, state::WAIT_FOR_PUBREL, 77);
    db.client_messages.push(c);
    let (records, summary) = to_records(&db, fixture_now_ms(&db), &first_listener).unwrap();
    assert_eq!(summary.incoming_qos2, 1);
    assert_eq!(
        summary.queued,
        before.queued + 1,
        "one more copy, for sess1"
    );
    assert!(summary.to_string().contains("awaiting PUBREL"), "{summary}");
    let state = state_of(records);
    let publisher = &state.sessions[&ByteStr::from("pubq2")];
    assert!(publisher.inbound_qos2.contains(&77));
    let sess1 = &state.sessions[&ByteStr::from("sess1")];
    let (_, last) = sess1.messages.iter().next_back().unwrap();
    assert_eq!(last.publish.topic.as_str(), "q/x");
}

#[test]
fn incoming_qos2_of_an_expired_publisher_is_counted_as_lost() {
    let mut db = fixture();
    let mut c = db.client_messages[0].clone();
    // sess5 expires 3600 s after it disconnected: an hour and more later it is gone.
    c.client_id = db.clients[1].id.clone();
    (c.direction, c.qos, c.state, c.mid) = (0, 2, state::WAIT_FOR_PUBREL, 5);
    db.client_messages.push(c);
    let late = fixture_now_ms(&db) + 3_700_000;
    let (_, summary) = to_records(&db, late, &first_listener).unwrap();
    assert_eq!((summary.incoming_qos2, summary.incoming_qos2_lost), (0, 1));
    assert!(
        summary.to_string().contains("left out: 1 incoming QoS 2"),
        "{summary}"
    );
}

#[test]
fn an_entry_that_is_not_mqtt_stops_the_import() {
    let mut db = fixture();
    db.subscriptions[0].topic = Bytes::from_static(b"a/#/b");
    assert!(to_records(&db, fixture_now_ms(&db), &first_listener).is_err());
    let mut db = fixture();
    if let Some(m) = db.messages.values_mut().next() {
        m.topic = Bytes::from_static(b"bad/+");
    }
    let e = to_records(&db, fixture_now_ms(&db), &first_listener)
        .err()
        .unwrap();
    assert!(e.what.starts_with("stored message"), "{}", e.what);
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("smq-import-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path) -> Config {
    Config {
        persistence: true,
        persistence_location: Some(dir.to_path_buf()),
        ..Config::default()
    }
}

#[test]
fn a_mosquitto_file_at_the_store_path_is_refused_then_imported_in_place() {
    let d = TempDir::new("inplace");
    let cfg = config(&d.0);
    let db_path = d.0.join("mosquitto.db");
    std::fs::write(&db_path, MOSQUITTO_2_0_11).unwrap();
    let e = check_store_path(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("is a Mosquitto persistence file (format version 6)"),
        "{e}"
    );
    assert!(e.contains("shardmq import-mosquitto-db"), "{e}");
    let now_ms = fixture_now_ms(&fixture());
    let imported = import_file(&cfg, &db_path, Instant::now(), now_ms).unwrap();
    assert_eq!(imported.moved, Some(d.0.join("mosquitto.db.mosquitto")));
    assert_eq!(
        std::fs::read(d.0.join("mosquitto.db.mosquitto")).unwrap(),
        MOSQUITTO_2_0_11
    );
    check_store_path(&cfg).unwrap();
    let (store, state) = crate::persist::open(&cfg, Instant::now()).unwrap();
    assert_eq!(state.retained.len(), 3);
    assert_eq!(state.sessions.len(), 2);
    drop(store);
    // Importing again into a store that holds data is refused; nothing changes.
    let e = import_file(
        &cfg,
        &d.0.join("mosquitto.db.mosquitto"),
        Instant::now(),
        now_ms,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ImportError::NotEmpty {
                retained: 3,
                sessions: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_leftover_of_the_old_default_name_is_refused() {
    let d = TempDir::new("olddefault");
    let cfg = config(&d.0);
    check_store_path(&cfg).unwrap();
    std::fs::write(d.0.join("shardmq.db.log"), b"x").unwrap();
    let e = check_store_path(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("shardmq.db") && e.contains("persistence_file shardmq.db"),
        "{e}"
    );
    let named = Config {
        persistence_file: "shardmq.db".into(),
        ..cfg
    };
    check_store_path(&named).unwrap();
}

#[test]
fn a_damaged_file_imports_nothing() {
    let d = TempDir::new("damaged");
    let cfg = config(&d.0.join("store"));
    let src = d.0.join("mosquitto.db");
    std::fs::write(&src, &MOSQUITTO_2_0_11[..MOSQUITTO_2_0_11.len() - 3]).unwrap();
    let e = import_file(&cfg, &src, Instant::now(), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
    assert!(!d.0.join("store").exists(), "nothing written");
}
