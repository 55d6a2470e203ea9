//! Deferred logins (`broker/login.rs`) without sockets: the CONNECT waits, pipelined
//! packets wait with it, the ticket's answer (fed back as the runtime would) lets the
//! client in or refuses it, the deadline refuses an unanswered one, and late or stale
//! answers find nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::harness::{connect, publish, will, Harness};
use crate::broker::access::{
    AccessHook, ConnectInfo, Decision, LoginAnswer, LoginSink, LoginTicket,
};
use crate::broker::ingest::Provenance;
use crate::codec::{AckKind, Packet, ProtocolVersion, QoS, ReasonCode};

const V311: ProtocolVersion = ProtocolVersion::V311;

type Tickets = Arc<Mutex<Vec<(String, LoginTicket)>>>;
type Answers = Arc<Mutex<Vec<LoginAnswer>>>;

/// Defers every login; refuses wills on `nowill/`.
struct Defer(Tickets);

impl AccessHook for Defer {
    fn authenticate(&mut self, c: &ConnectInfo<'_>) -> Decision {
        self.0
            .lock()
            .unwrap()
            .push((c.client_id().to_owned(), c.defer()));
        Decision::Deferred
    }

    fn authorize_publish(&mut self, _: &Provenance<'_>, topic: &str) -> bool {
        !topic.starts_with("nowill/")
    }
}

fn harness() -> (Harness, Tickets, Answers) {
    let mut h = Harness::new(Harness::default_config());
    let tickets = Tickets::default();
    let answers = Answers::default();
    let sink = {
        let answers = Arc::clone(&answers);
        LoginSink::new(move |a| answers.lock().unwrap().push(a))
    };
    h.broker
        .set_access(Box::new(Defer(Arc::clone(&tickets))), Some(sink));
    (h, tickets, answers)
}

/// Answers the ticket of `client_id` and hands the answer to the broker.
fn answer(h: &mut Harness, tickets: &Tickets, answers: &Answers, client_id: &str, d: Decision) {
    let t = {
        let mut ts = tickets.lock().unwrap();
        let i = ts.iter().position(|(id, _)| id == client_id).unwrap();
        ts.remove(i).1
    };
    t.answer(d);
    deliver(h, answers);
}

fn deliver(h: &mut Harness, answers: &Answers) {
    let pending: Vec<LoginAnswer> = std::mem::take(&mut *answers.lock().unwrap());
    for a in pending {
        h.broker.on_login_answer(a, h.now);
    }
    h.drive();
}

#[test]
fn the_connect_and_its_pipelined_packets_wait_for_the_answer() {
    let (mut h, tickets, answers) = harness();
    let watcher = h.open(V311);
    h.send(
        watcher,
        Packet::Connect(Box::new(connect("watcher", V311, true))),
    );
    h.assert_idle(watcher);
    answer(&mut h, &tickets, &answers, "watcher", Decision::Allow);
    assert!(matches!(h.expect(watcher), Packet::ConnAck(a) if a.reason.0 == 0));
    h.subscribe(watcher, "t/#", QoS::AtLeastOnce);

    let slow = h.open(V311);
    h.send(slow, Packet::Connect(Box::new(connect("slow", V311, true))));
    h.send(
        slow,
        Packet::Publish(publish("t/1", b"x", QoS::AtLeastOnce, false, Some(5))),
    );
    assert!(
        !h.broker.wants_read(slow, h.now),
        "read while the login is pending"
    );
    h.advance(Duration::from_secs(5));
    h.assert_idle(slow);
    h.assert_idle(watcher);
    answer(&mut h, &tickets, &answers, "slow", Decision::Allow);
    assert!(matches!(h.expect(slow), Packet::ConnAck(a) if a.reason.0 == 0));
    assert_eq!(h.expect_ack(slow, AckKind::PubAck).packet_id, 5);
    assert_eq!(h.expect_publish(watcher).topic.as_str(), "t/1");
    assert!(h.broker.wants_read(slow, h.now));
}

#[test]
fn refusals_timeouts_and_stale_answers() {
    let (mut h, tickets, answers) = harness();
    // Refused through the ticket: 3.1.1 code 5, closed.
    let bad = h.open(V311);
    h.send(bad, Packet::Connect(Box::new(connect("bad", V311, true))));
    answer(&mut h, &tickets, &answers, "bad", Decision::BadCredentials);
    assert!(matches!(h.expect(bad), Packet::ConnAck(a) if a.reason == ReasonCode(5)));
    assert!(h.is_closed(bad));

    // Allowed, but the will's topic is not: refused (not authorised, 5).
    let mut c = connect("will", V311, true);
    c.will = Some(will("nowill/x", b"bye", QoS::AtMostOnce, false));
    let w = h.open(V311);
    h.send(w, Packet::Connect(Box::new(c)));
    answer(&mut h, &tickets, &answers, "will", Decision::Allow);
    assert!(matches!(h.expect(w), Packet::ConnAck(a) if a.reason == ReasonCode(5)));

    // Unanswered: refused as unavailable (3) at connect_timeout after the CONNECT, not
    // at the accept's deadline.
    let timeout = h.broker.config.connect_timeout;
    let idle = h.open(V311);
    h.advance(timeout / 2);
    h.send(idle, Packet::Connect(Box::new(connect("idle", V311, true))));
    h.advance(timeout / 2 + Duration::from_millis(100));
    h.assert_idle(idle);
    assert!(!h.is_closed(idle));
    h.advance(timeout / 2);
    assert!(matches!(h.expect(idle), Packet::ConnAck(a) if a.reason == ReasonCode(3)));
    assert!(h.is_closed(idle));
    // Its late answer finds nothing.
    answer(&mut h, &tickets, &answers, "idle", Decision::Allow);
    h.assert_idle(idle);

    // The client leaves before the answer; the answer finds nothing.
    let gone = h.open(V311);
    h.send(gone, Packet::Connect(Box::new(connect("gone", V311, true))));
    h.drop_conn(gone);
    answer(&mut h, &tickets, &answers, "gone", Decision::Allow);
    assert_eq!(h.broker.stats().clients_connected, 0);

    // A dropped ticket refuses as unavailable.
    let dropped = h.open(V311);
    h.send(
        dropped,
        Packet::Connect(Box::new(connect("dropped", V311, true))),
    );
    tickets.lock().unwrap().clear();
    deliver(&mut h, &answers);
    assert!(matches!(h.expect(dropped), Packet::ConnAck(a) if a.reason == ReasonCode(3)));
}
