//! Mosquitto's persistence formats: a file the Debian `mosquitto` 2.0.11 binary wrote
//! (format 6), files built here chunk by chunk from Mosquitto's struct layouts (formats
//! 3, 4 and 5), and damaged files.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

/// Written by Debian's mosquitto 2.0.11 at shutdown: retained r/a (QoS 1), r/b (QoS 0)
/// and r/c (MQTT 5, user property k=v, content type text/x); session sess1 (MQTT 3.1.1,
/// q/# at QoS 1, three queued QoS 1 messages on q/x) and sess5 (MQTT 5, expiry 3600 s,
/// v5/# at QoS 2, one queued QoS 2 message with a message expiry of 600 s).
pub(crate) const MOSQUITTO_2_0_11: &[u8] = include_bytes!("testdata/mosquitto-2.0.11.db");

#[test]
fn reads_what_mosquitto_2_0_wrote() {
    let db = parse(&Bytes::from_static(MOSQUITTO_2_0_11)).unwrap();
    assert_eq!(db.version, 6);
    assert_eq!(db.unknown_chunks, 0);
    assert_eq!(db.messages.len(), 7);
    assert_eq!(db.retained.len(), 3);
    let retained: Vec<&[u8]> = db
        .retained
        .iter()
        .map(|id| db.messages[id].topic.as_ref())
        .collect();
    assert_eq!(retained, [&b"r/a"[..], b"r/b", b"r/c"]);
    let r_c = db.messages.values().find(|m| m.topic == "r/c").unwrap();
    assert_eq!(
        (r_c.qos, r_c.retain, r_c.payload.as_ref()),
        (1, true, &b"retained-c"[..])
    );
    assert!(!r_c.properties.is_empty());
    assert_eq!(db.clients.len(), 2);
    let sess1 = &db.clients[0];
    assert_eq!(sess1.id, "sess1");
    assert_eq!(
        (sess1.session_expiry_interval, sess1.session_expiry_time),
        (u32::MAX, 0)
    );
    assert_eq!(sess1.listener_port, 18840);
    let sess5 = &db.clients[1];
    assert_eq!(sess5.session_expiry_interval, 3600);
    assert!(sess5.session_expiry_time > 0);
    assert_eq!(db.client_messages.len(), 4);
    assert!(db
        .client_messages
        .iter()
        .all(|c| c.direction == DIRECTION_OUT && c.state == state::QUEUED));
    let queued: Vec<&[u8]> = db
        .client_messages
        .iter()
        .filter(|c| c.client_id == "sess1")
        .map(|c| db.messages[&c.store_id].payload.as_ref())
        .collect();
    assert_eq!(queued, [&b"queued-1"[..], b"queued-2", b"queued-3"]);
    let subs: Vec<(&[u8], &[u8], u8)> = db
        .subscriptions
        .iter()
        .map(|s| (s.client_id.as_ref(), s.topic.as_ref(), s.qos))
        .collect();
    assert_eq!(
        subs,
        [(&b"sess1"[..], &b"q/#"[..], 1), (b"sess5", b"v5/#", 2)]
    );
}

fn header(version: u32) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_slice(&MAGIC);
    b.put_u32(0); // CRC, unused
    b.put_u32(version);
    b
}

fn chunk(out: &mut BytesMut, version: u32, kind: u32, body: &[u8]) {
    if version >= 5 {
        out.put_u32(kind);
    } else {
        out.put_u16(u16::try_from(kind).unwrap());
    }
    out.put_u32(u32::try_from(body.len()).unwrap());
    out.put_slice(body);
}

fn string(out: &mut BytesMut, s: &[u8]) {
    out.put_u16(u16::try_from(s.len()).unwrap());
    out.put_slice(s);
}

/// A file in format 2, 3 or 4 as Mosquitto 1.3 / 1.4 / 1.5 write it: one retained
/// message, a client with an inflight QoS 1 message, and its subscription.
pub(crate) fn v234_file(version: u32) -> Bytes {
    let mut f = header(version);
    let mut b = BytesMut::new();
    b.put_u8(1); // shutdown
    b.put_u8(8); // dbid size
    b.put_u64_le(9);
    chunk(&mut f, version, 1, &b);
    for (id, topic, retain) in [(5u64, &b"old/r"[..], 1u8), (6, b"old/q", 0)] {
        let mut b = BytesMut::new();
        b.put_u64_le(id);
        string(&mut b, b"publisher");
        if version == 4 {
            string(&mut b, b"user");
            b.put_u16(1883);
        }
        b.put_u16(3); // source mid
        b.put_u16(0); // mid
        string(&mut b, topic);
        b.put_u8(1);
        b.put_u8(retain);
        b.put_u32(2);
        b.put_slice(b"hi");
        chunk(&mut f, version, 2, &b);
    }
    chunk(&mut f, version, 4, &5u64.to_le_bytes());
    let mut b = BytesMut::new();
    string(&mut b, b"old-client");
    b.put_u16(7);
    if version >= 3 {
        b.put_i64_le(1_600_000_000);
    }
    chunk(&mut f, version, 6, &b);
    let mut b = BytesMut::new();
    string(&mut b, b"old-client");
    b.put_u64_le(6);
    b.put_u16(7); // mid
    b.put_u8(1); // qos
    b.put_u8(0); // retain
    b.put_u8(DIRECTION_OUT);
    b.put_u8(state::WAIT_FOR_PUBACK);
    b.put_u8(1); // dup
    chunk(&mut f, version, 3, &b);
    let mut b = BytesMut::new();
    string(&mut b, b"old-client");
    string(&mut b, b"old/#");
    b.put_u8(1);
    chunk(&mut f, version, 5, &b);
    chunk(&mut f, version, 99, b"future chunk");
    f.freeze()
}

#[test]
fn reads_formats_2_3_and_4() {
    for version in [2, 3, 4] {
        let db = parse(&v234_file(version)).unwrap();
        assert_eq!(db.version, version);
        assert_eq!(db.last_db_id, 9);
        assert_eq!(db.messages.len(), 2, "{version}");
        assert_eq!(db.messages[&5].topic, "old/r");
        assert_eq!(db.messages[&5].source_mid, 3);
        assert!(db.messages[&5].retain);
        assert_eq!(db.retained, [5]);
        assert_eq!(db.clients[0].id, "old-client");
        assert_eq!(db.clients[0].session_expiry_interval, u32::MAX, "never");
        let c = &db.client_messages[0];
        assert_eq!(
            (c.store_id, c.mid, c.state, c.dup),
            (6, 7, state::WAIT_FOR_PUBACK, true)
        );
        assert_eq!(db.subscriptions[0].topic, "old/#");
        assert_eq!(db.unknown_chunks, 1, "skipped, as Mosquitto does");
    }
}

/// Format 5 (Mosquitto 1.6): the fixed structs of format 6 without the client's
/// username and listener port.
#[test]
fn reads_format_5() {
    let mut f = header(5);
    let mut b = BytesMut::new();
    b.put_u64_le(3);
    b.put_u8(1);
    b.put_u8(8);
    b.put_slice(&[0; 6]);
    chunk(&mut f, 5, 1, &b);
    let mut b = BytesMut::new();
    b.put_i64_le(1_700_000_100); // session expiry time
    b.put_u32(100);
    b.put_u16(4);
    b.put_u16(2);
    b.put_slice(b"c5");
    chunk(&mut f, 5, 6, &b);
    let mut b = BytesMut::new();
    b.put_u32(42); // subscription identifier
    b.put_u16(2);
    b.put_u16(3);
    b.put_u8(2);
    b.put_u8(0b0100); // No Local
    b.put_slice(&[0; 2]);
    b.put_slice(b"c5a/b");
    chunk(&mut f, 5, 5, &b);
    let db = parse(&f.freeze()).unwrap();
    let c = &db.clients[0];
    assert_eq!(
        (c.session_expiry_time, c.session_expiry_interval, c.last_mid),
        (1_700_000_100, 100, 4)
    );
    assert_eq!(c.username, None);
    let s = &db.subscriptions[0];
    assert_eq!(
        (s.identifier, s.qos, s.options, s.topic.as_ref()),
        (42, 2, 0b0100, &b"a/b"[..])
    );
}

#[test]
fn other_files_and_versions_are_refused() {
    assert_eq!(
        parse(&Bytes::from_static(b"SMQSNAP\x01")),
        Err(DbError::NotMosquitto)
    );
    let mut f = header(7);
    f.put_slice(&[0; 8]);
    assert_eq!(parse(&f.freeze()), Err(DbError::Version(7)));
    let mut f = header(6);
    let mut b = BytesMut::new();
    b.put_u64_le(1);
    b.put_u8(1);
    b.put_u8(4);
    b.put_slice(&[0; 6]);
    chunk(&mut f, 6, 1, &b);
    assert_eq!(parse(&f.freeze()), Err(DbError::DbidSize(4)));
    assert_eq!(version(MOSQUITTO_2_0_11), Some(6));
    assert_eq!(version(b"\x00\xb5\x00mosquitto db"), None);
}

/// Every prefix of a real file, and every single-byte change, parses or is refused;
/// nothing panics and no length is trusted.
#[test]
fn damaged_files_never_panic() {
    for n in 0..MOSQUITTO_2_0_11.len() {
        let _ = parse(&Bytes::copy_from_slice(&MOSQUITTO_2_0_11[..n]));
    }
    // A cut inside a chunk is refused, never read as a shorter file.
    let cut = &MOSQUITTO_2_0_11[..MOSQUITTO_2_0_11.len() - 1];
    assert!(matches!(
        parse(&Bytes::copy_from_slice(cut)),
        Err(DbError::Truncated(_))
    ));
    for i in 0..MOSQUITTO_2_0_11.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut d = MOSQUITTO_2_0_11.to_vec();
            d[i] ^= flip;
            let _ = parse(&Bytes::from(d));
        }
    }
    for version in [2, 3, 4] {
        let f = v234_file(version);
        for n in 0..f.len() {
            let _ = parse(&f.slice(..n));
        }
    }
}
