//! Malformed and protocol-violating input, table-driven, against one real broker: every
//! case sends hand-made bytes on a fresh connection (3.1.1 or 5.0, before or after
//! CONNECT) and asserts what the spec asks for — a close (3.1.1, or before CONNECT), or a
//! v5 DISCONNECT with the listed reason code(s) then a close. Between cases a healthy
//! publisher keeps feeding a healthy subscriber; at the end the subscriber must have
//! every message, in order, and the broker must still accept new clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{frame, mqtt_str, BrokerProc, Raw};

/// `max_packet_size` of the broker under test (for the oversized cases).
const MAX_PACKET: usize = 4096;

#[derive(Clone, Copy, Debug)]
enum Start {
    /// Nothing sent before the case bytes.
    Fresh,
    /// A 3.1.1 CONNECT was accepted.
    V311,
    /// A 5.0 CONNECT was accepted.
    V5,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The connection is closed (a CONNACK refusal may come first).
    Close,
    /// A v5 DISCONNECT with one of these reason codes, then the close.
    Disconnect(&'static [u8]),
}

struct Case {
    name: &'static str,
    start: Start,
    bytes: Vec<u8>,
    expect: Expect,
}

const MALFORMED: &[u8] = &[0x81];
const PROTOCOL: &[u8] = &[0x82];
/// The spec leaves the choice between the two (e.g. values that are out of range).
const MALFORMED_OR_PROTOCOL: &[u8] = &[0x81, 0x82];

fn connect_v5(id: &str, props: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(b"MQTT", &mut body);
    body.extend_from_slice(&[5, 0x02, 0, 60]);
    common::var_int(props.len(), &mut body);
    body.extend_from_slice(props);
    mqtt_str(id.as_bytes(), &mut body);
    frame(0x10, &body)
}

/// CONNECT 3.1.1 with raw flags and payload after the client id.
fn connect_raw(name: &[u8], level: u8, flags: u8, id: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(name, &mut body);
    body.extend_from_slice(&[level, flags, 0, 60]);
    mqtt_str(id, &mut body);
    body.extend_from_slice(rest);
    frame(0x10, &body)
}

/// v5 PUBLISH QoS 0 with raw property bytes.
fn publish_v5(first: u8, topic: &[u8], props: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(topic, &mut body);
    if first & 0x06 != 0 {
        body.extend_from_slice(&[0, 1]);
    }
    common::var_int(props.len(), &mut body);
    body.extend_from_slice(props);
    body.extend_from_slice(b"x");
    frame(first, &body)
}

/// v5 SUBSCRIBE of one filter with raw options and properties.
fn subscribe_v5(filter: &[u8], options: u8, props: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1];
    common::var_int(props.len(), &mut body);
    body.extend_from_slice(props);
    mqtt_str(filter, &mut body);
    body.push(options);
    frame(0x82, &body)
}

fn case(name: &'static str, start: Start, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        start,
        bytes,
        expect,
    }
}

#[allow(clippy::too_many_lines)] // the table
fn cases() -> Vec<Case> {
    use Expect::{Close, Disconnect};
    use Start::{Fresh, V311, V5};
    let publish = |t: &str| common::publish(t, 0, false, false, 0, b"x");
    let big = vec![b'x'; MAX_PACKET + 10];
    vec![
        // --- before CONNECT [MQTT-3.1.0-1]
        case("publish_before_connect", Fresh, publish("t"), Close),
        case(
            "subscribe_before_connect",
            Fresh,
            common::subscribe(1, &[("t", 0)]),
            Close,
        ),
        case("pingreq_before_connect", Fresh, vec![0xC0, 0], Close),
        case("disconnect_before_connect", Fresh, vec![0xE0, 0], Close),
        case(
            "garbage_before_connect",
            Fresh,
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Close,
        ),
        // --- CONNECT itself
        case(
            "connect_bad_protocol_name",
            Fresh,
            connect_raw(b"MQTX", 4, 2, b"c", b""),
            Close,
        ),
        case(
            "connect_reserved_flag_mqtt_3_1_2_3",
            Fresh,
            connect_raw(b"MQTT", 4, 3, b"c", b""),
            Close,
        ),
        case(
            "connect_will_qos_3_mqtt_3_1_2_12",
            Fresh,
            connect_raw(b"MQTT", 4, 0x1E, b"c", &[0, 1, b't', 0, 1, b'x']),
            Close,
        ),
        case(
            "connect_will_qos_without_will_flag_mqtt_3_1_2_11",
            Fresh,
            connect_raw(b"MQTT", 4, 0x0A, b"c", b""),
            Close,
        ),
        case(
            "connect_will_retain_without_will_flag_mqtt_3_1_2_13",
            Fresh,
            connect_raw(b"MQTT", 4, 0x22, b"c", b""),
            Close,
        ),
        case(
            "connect_password_without_username_mqtt_3_1_2_22",
            Fresh,
            connect_raw(b"MQTT", 4, 0x42, b"c", &[0, 1, b'p']),
            Close,
        ),
        case(
            "connect_client_id_invalid_utf8",
            Fresh,
            connect_raw(b"MQTT", 4, 2, &[0xC3, 0x28], b""),
            Close,
        ),
        case(
            "connect_client_id_nul",
            Fresh,
            connect_raw(b"MQTT", 4, 2, b"a\0b", b""),
            Close,
        ),
        case(
            "connect_truncated_payload",
            Fresh,
            frame(
                0x10,
                &[0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 9, b'a'],
            ),
            Close,
        ),
        case(
            "connect_bad_flags_in_fixed_header",
            Fresh,
            {
                let mut c = common::connect_v311("c", true, 60, None);
                c[0] = 0x11;
                c
            },
            Close,
        ),
        case(
            "connect_v5_receive_maximum_zero",
            Fresh,
            connect_v5("c", &[0x21, 0, 0]),
            Close,
        ),
        case(
            "connect_v5_duplicate_session_expiry",
            Fresh,
            connect_v5("c", &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]),
            Close,
        ),
        case(
            "connect_v5_unknown_property",
            Fresh,
            connect_v5("c", &[0x7F, 0]),
            Close,
        ),
        case(
            "connect_v5_request_problem_info_2",
            Fresh,
            connect_v5("c", &[0x17, 2]),
            Close,
        ),
        case(
            "connect_v5_maximum_packet_size_zero",
            Fresh,
            connect_v5("c", &[0x27, 0, 0, 0, 0]),
            Close,
        ),
        // --- remaining length and framing
        case(
            "remaining_length_5_bytes_mqtt_1_5_5_1",
            V311,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Close,
        ),
        case(
            "remaining_length_5_bytes_v5",
            V5,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Disconnect(MALFORMED),
        ),
        case(
            "oversized_packet_v311",
            V311,
            common::publish("t", 0, false, false, 0, &big),
            Close,
        ),
        case(
            "oversized_packet_v5_0x95",
            V5,
            frame(0x30, &[&[0, 1, b't', 0][..], &big].concat()),
            Disconnect(&[0x95]),
        ),
        case(
            "oversized_by_announced_length_v5",
            V5,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F],
            Disconnect(&[0x95]),
        ),
        case(
            "publish_topic_longer_than_packet",
            V311,
            frame(0x30, &[0, 10, b'a', b'b']),
            Close,
        ),
        case(
            "publish_topic_longer_than_packet_v5",
            V5,
            frame(0x30, &[0, 10, b'a', b'b']),
            Disconnect(MALFORMED),
        ),
        case("reserved_packet_type_0", V311, vec![0x00, 0], Close),
        case(
            "reserved_packet_type_0_v5",
            V5,
            vec![0x00, 0],
            Disconnect(MALFORMED),
        ),
        case("auth_in_v311", V311, vec![0xF0, 0], Close),
        // --- reserved fixed-header flags [MQTT-2.1.3-1] (2.2.2-2 in 3.1.1)
        case(
            "flags_subscribe_0x80",
            V311,
            {
                let mut s = common::subscribe(1, &[("t", 0)]);
                s[0] = 0x80;
                s
            },
            Close,
        ),
        case(
            "flags_subscribe_v5",
            V5,
            {
                let mut s = subscribe_v5(b"t", 0, &[]);
                s[0] = 0x83;
                s
            },
            Disconnect(MALFORMED),
        ),
        case(
            "flags_unsubscribe",
            V311,
            frame(0xA0, &[0, 1, 0, 1, b't']),
            Close,
        ),
        case(
            "flags_unsubscribe_v5",
            V5,
            frame(0xA3, &[0, 1, 0, 0, 1, b't']),
            Disconnect(MALFORMED),
        ),
        case("flags_pubrel", V311, common::ack(0x60, 1), Close),
        case(
            "flags_pubrel_v5",
            V5,
            common::ack(0x60, 1),
            Disconnect(MALFORMED),
        ),
        case("flags_puback", V311, common::ack(0x41, 1), Close),
        case(
            "flags_pubrec_v5",
            V5,
            common::ack(0x52, 1),
            Disconnect(MALFORMED),
        ),
        case("flags_pubcomp", V311, common::ack(0x78, 1), Close),
        case("flags_pingreq", V311, vec![0xC1, 0], Close),
        case("flags_pingreq_v5", V5, vec![0xC4, 0], Disconnect(MALFORMED)),
        case("flags_disconnect", V311, vec![0xE1, 0], Close),
        case(
            "flags_disconnect_v5",
            V5,
            vec![0xE2, 0],
            Disconnect(MALFORMED),
        ),
        case("pingreq_with_payload", V311, vec![0xC0, 1, 0], Close),
        // --- PUBLISH
        case(
            "publish_qos_3_mqtt_3_3_1_4",
            V311,
            frame(0x36, &[0, 1, b't', 0, 1, b'x']),
            Close,
        ),
        case(
            "publish_qos_3_v5",
            V5,
            frame(0x36, &[0, 1, b't', 0, 1, 0, b'x']),
            Disconnect(MALFORMED),
        ),
        case(
            "publish_dup_with_qos_0_mqtt_3_3_1_2",
            V311,
            common::publish("t", 0, false, true, 0, b"x"),
            Close,
        ),
        case(
            "publish_wildcard_plus_mqtt_3_3_2_2",
            V311,
            publish("a/+"),
            Close,
        ),
        case(
            "publish_wildcard_hash_v5",
            V5,
            publish_v5(0x30, b"a/#", &[]),
            Disconnect(&[0x90, 0x81, 0x82]),
        ),
        case(
            "publish_invalid_utf8_mqtt_1_5_4_1",
            V311,
            frame(0x30, &[0, 2, 0xC3, 0x28, b'x']),
            Close,
        ),
        case(
            "publish_utf16_surrogate_v5",
            V5,
            publish_v5(0x30, &[0xED, 0xA0, 0x80], &[]),
            Disconnect(MALFORMED),
        ),
        case(
            "publish_nul_in_topic_mqtt_1_5_4_2",
            V311,
            publish("a\0b"),
            Close,
        ),
        case(
            "publish_nul_in_topic_v5",
            V5,
            publish_v5(0x30, b"a\0b", &[]),
            Disconnect(MALFORMED),
        ),
        case(
            "publish_packet_id_0_mqtt_2_2_1_3",
            V311,
            common::publish("t", 1, false, false, 0, b"x"),
            Close,
        ),
        case(
            "publish_packet_id_0_v5",
            V5,
            {
                let mut p = publish_v5(0x32, b"t", &[]);
                p[5] = 0;
                p[6] = 0;
                p
            },
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case(
            "publish_empty_topic_v311",
            V311,
            frame(0x30, &[0, 0, b'x']),
            Close,
        ),
        // [MQTT-3.3.2-8] a protocol error; 0x90 (Topic Name invalid) is the more specific code.
        case(
            "publish_empty_topic_without_alias_v5",
            V5,
            publish_v5(0x30, b"", &[]),
            Disconnect(&[0x82, 0x90]),
        ),
        case(
            "publish_topic_alias_over_maximum_v5_mqtt_3_3_2_9",
            V5,
            // max_topic_alias is 10 by default.
            publish_v5(0x30, b"t", &[0x23, 0, 11]),
            Disconnect(&[0x94]),
        ),
        case(
            "publish_subscription_identifier_from_client_mqtt_3_3_4_6",
            V5,
            publish_v5(0x30, b"t", &[0x0B, 1]),
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case(
            "publish_duplicate_payload_format_v5",
            V5,
            publish_v5(0x30, b"t", &[0x01, 0, 0x01, 0]),
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case(
            "publish_payload_format_2_v5",
            V5,
            publish_v5(0x30, b"t", &[0x01, 2]),
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case(
            "publish_property_not_for_publish_v5",
            V5,
            publish_v5(0x30, b"t", &[0x11, 0, 0, 0, 1]),
            Disconnect(MALFORMED),
        ),
        case(
            "publish_property_length_past_end_v5",
            V5,
            frame(0x30, &[0, 1, b't', 20, 0x01, 0]),
            Disconnect(MALFORMED),
        ),
        case(
            "publish_unknown_property_v5",
            V5,
            publish_v5(0x30, b"t", &[0x7F, 0]),
            Disconnect(MALFORMED),
        ),
        case(
            "publish_user_property_truncated_v5",
            V5,
            publish_v5(0x30, b"t", &[0x26, 0, 5, b'k']),
            Disconnect(MALFORMED),
        ),
        // --- SUBSCRIBE / UNSUBSCRIBE
        case(
            "subscribe_empty_mqtt_3_8_3_3",
            V311,
            frame(0x82, &[0, 1]),
            Close,
        ),
        case(
            "subscribe_empty_v5",
            V5,
            frame(0x82, &[0, 1, 0]),
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case(
            "subscribe_qos_3_mqtt_3_8_3_4",
            V311,
            common::subscribe(1, &[("t", 3)]),
            Close,
        ),
        case(
            "subscribe_reserved_option_bits_v311",
            V311,
            common::subscribe(1, &[("t", 0x40)]),
            Close,
        ),
        case(
            "subscribe_reserved_option_bits_v5",
            V5,
            subscribe_v5(b"t", 0xC0, &[]),
            Disconnect(MALFORMED),
        ),
        case(
            "subscribe_retain_handling_3_v5",
            V5,
            subscribe_v5(b"t", 0x30, &[]),
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case(
            "subscribe_qos_3_v5",
            V5,
            subscribe_v5(b"t", 3, &[]),
            Disconnect(MALFORMED),
        ),
        case(
            "subscribe_packet_id_0",
            V311,
            common::subscribe(0, &[("t", 0)]),
            Close,
        ),
        case(
            "subscribe_subscription_identifier_0_v5",
            V5,
            subscribe_v5(b"t", 0, &[0x0B, 0]),
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case(
            "subscribe_filter_invalid_utf8",
            V311,
            frame(0x82, &[0, 1, 0, 2, 0xC3, 0x28, 0]),
            Close,
        ),
        case(
            "subscribe_filter_truncated",
            V311,
            frame(0x82, &[0, 1, 0, 9, b'a']),
            Close,
        ),
        case(
            "unsubscribe_empty_mqtt_3_10_3_2",
            V311,
            frame(0xA2, &[0, 1]),
            Close,
        ),
        case(
            "unsubscribe_empty_v5",
            V5,
            frame(0xA2, &[0, 1, 0]),
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        // --- wrong packets after CONNECT
        case(
            "second_connect_mqtt_3_1_0_2",
            V311,
            common::connect_v311("again", true, 60, None),
            Close,
        ),
        case(
            "second_connect_v5",
            V5,
            connect_v5("again", &[]),
            Disconnect(PROTOCOL),
        ),
        case("connack_from_client", V311, vec![0x20, 2, 0, 0], Close),
        case(
            "connack_from_client_v5",
            V5,
            vec![0x20, 3, 0, 0, 0],
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case(
            "suback_from_client_v5",
            V5,
            vec![0x90, 4, 0, 1, 0, 0],
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case("pingresp_from_client", V311, vec![0xD0, 0], Close),
        case(
            "auth_without_method_v5",
            V5,
            vec![0xF0, 0],
            Disconnect(MALFORMED_OR_PROTOCOL),
        ),
        case(
            "disconnect_v5_session_expiry_after_zero",
            V5,
            vec![0xE0, 7, 0, 5, 0x11, 0, 0, 0, 9],
            Disconnect(PROTOCOL),
        ),
    ]
}

fn start(raw: &mut Raw, s: Start, id: &str) {
    match s {
        Start::Fresh => {}
        Start::V311 => {
            raw.send(&common::connect_v311(id, true, 60, None));
            let ack = raw.recv().expect("CONNACK");
            assert_eq!((ack.first, ack.body[1]), (0x20, 0), "{id}");
        }
        Start::V5 => {
            raw.send(&connect_v5(id, &[]));
            let ack = raw.recv().expect("CONNACK");
            assert_eq!((ack.first, ack.body[1]), (0x20, 0), "{id}");
        }
    }
}

/// What the broker did: the reason of a DISCONNECT it sent (if any) and whether it closed.
fn outcome(raw: &mut Raw) -> (Option<u8>, bool) {
    let mut reason = None;
    while let Some(p) = raw.recv_within(Duration::from_secs(5)) {
        if p.first == 0xE0 {
            reason = Some(p.body.first().copied().unwrap_or(0));
        }
    }
    // recv returned None: EOF/reset (closed) or timeout (not closed).
    (reason, raw.closed_by_broker_now())
}

trait ClosedNow {
    fn closed_by_broker_now(&mut self) -> bool;
}

impl ClosedNow for Raw {
    fn closed_by_broker_now(&mut self) -> bool {
        use std::io::Read;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 64];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

#[test]
fn malformed_input_table() {
    let broker = BrokerProc::start(&format!("max_packet_size {MAX_PACKET}"));
    let port = broker.port;
    // A healthy pair: one message per case must all arrive, in order.
    let (mut keeper, _, _) = Raw::mqtt_connect(port, "keeper", false);
    assert_eq!(keeper.subscribe(1, &[("keep", 1)]), vec![1]);
    let (mut feeder, _, _) = Raw::mqtt_connect(port, "feeder", true);
    let table = cases();
    assert!(table.len() >= 40, "{} cases", table.len());
    let mut failures = Vec::new();
    for (i, c) in table.iter().enumerate() {
        feeder.send(&common::publish(
            "keep",
            1,
            false,
            false,
            (i + 1) as u16,
            format!("{i}").as_bytes(),
        ));
        let ack = feeder.recv().expect("feeder PUBACK");
        assert_eq!(ack.first, 0x40);
        let mut raw = Raw::connect(port);
        start(&mut raw, c.start, &format!("case-{i}"));
        if !raw.try_send(&c.bytes) {
            // Already closed by the broker while sending: acceptable for Close only.
            if !matches!(c.expect, Expect::Close) {
                failures.push(format!("{}: closed while sending", c.name));
            }
            continue;
        }
        let (reason, closed) = outcome(&mut raw);
        let ok = match c.expect {
            Expect::Close => closed && (reason.is_none() || matches!(c.start, Start::V5)),
            Expect::Disconnect(codes) => closed && reason.is_some_and(|r| codes.contains(&r)),
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got DISCONNECT {reason:02x?}, closed {closed}",
                c.name, c.expect
            ));
        }
    }
    // Nothing queued for the healthy subscriber was lost, in order.
    for i in 0..table.len() {
        let p = keeper.recv().expect("keeper message");
        let (topic, id, payload) = p.publish_parts();
        assert_eq!(
            (topic.as_str(), payload),
            ("keep", format!("{i}").into_bytes())
        );
        keeper.send(&common::ack(0x40, id));
    }
    // And the broker still accepts clients.
    let (_c, _, code) = Raw::mqtt_connect(port, "after", true);
    assert_eq!(code, 0);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
