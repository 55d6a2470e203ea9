//! Parser tests for `parse_delivery.rs`: `max_qos`, `mount_point`,
//! `use_username_as_clientid`, `upgrade_outgoing_qos`.

use super::tests::{parse, parse_err};

#[test]
fn max_qos_and_username_as_clientid_are_per_listener() {
    let c = parse(
        "max_qos 1\nuse_username_as_clientid true\n\
         listener 1884\nmaximum_qos 0\nlistener 1885\n",
    );
    let qos: Vec<u8> = c.listeners.iter().map(|l| l.max_qos).collect();
    assert_eq!(qos, [1, 0, 2]);
    let by_name: Vec<bool> = c
        .listeners
        .iter()
        .map(|l| l.use_username_as_clientid)
        .collect();
    assert_eq!(by_name, [true, false, false]);
}

#[test]
fn max_qos_out_of_range_is_an_error_with_line() {
    let e = parse_err("listener 1883\nmax_qos 3\n");
    assert!(e.contains("line 2"), "{e}");
    assert!(e.contains("between 0 and 2"), "{e}");
}

#[test]
fn upgrade_outgoing_qos_is_global() {
    assert!(parse("upgrade_outgoing_qos true\n").upgrade_outgoing_qos);
    assert!(!parse("listener 1883\n").upgrade_outgoing_qos);
}

#[test]
fn mount_point_is_per_listener_literal_and_never_a_wildcard() {
    let c = parse("listener 1883\nmount_point site1/\nlistener 1884\n");
    assert_eq!(c.listeners[0].mount_point.as_deref(), Some("site1/"));
    assert_eq!(c.listeners[1].mount_point, None);
    for bad in ["a/+/", "a/#", "#"] {
        let e = parse_err(&format!("listener 1883\nmount_point {bad}\n"));
        assert!(e.contains("line 2") && e.contains("mount_point"), "{e}");
    }
    let c = parse("listener 1883\nmount_point users/%u/\n");
    assert_eq!(c.listeners[0].mount_point.as_deref(), Some("users/%u/"));
    assert!(
        c.warnings.iter().any(|w| w.contains("taken literally")),
        "{:?}",
        c.warnings
    );
}
