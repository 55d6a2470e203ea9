//! `round_robin false` (the default): while a bridge is connected to a later address it
//! tries its first (primary) address every [`PRIMARY_RETRY`] (5 s, as Mosquitto), with a
//! plain TCP connection; once one connects, the probe closes, so does the bridge's
//! connection (without DISCONNECT: the secondary publishes the bridge's `0` will), and
//! the bridge connects to the primary at once. QoS 1/2 messages the secondary had not
//! acknowledged stay in the local session and go to the primary. Never blocks: a host
//! name is resolved on the helper thread the attempts use, and the probe's connect is
//! polled every [`PROBE_POLL`], never waited for.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::{Phase, Shard};
use crate::bridge::Settings;
use crate::runtime::socket::connect_from;

/// How often the primary address is tried (Mosquitto's `primary_retry`).
pub(super) const PRIMARY_RETRY: Duration = Duration::from_secs(5);
/// How often a probe's connect is checked while it is under way.
const PROBE_POLL: Duration = Duration::from_millis(100);

/// Where a bridge's probe of its primary address stands.
#[derive(Debug)]
pub(in crate::runtime::shard) enum Probe {
    /// The next probe starts at this time.
    Due(Instant),
    /// The primary's host name is being looked up (attempt number).
    Resolving(u64),
    /// TCP connect under way: checked next at the first time, given up at the second.
    Connecting(TcpStream, Instant, Instant),
}

impl Probe {
    /// For a connection that just came up on address number `address`: a probe of the
    /// primary if that is another one and `round_robin` is false.
    pub(super) fn arm(settings: &Settings, address: usize, now: Instant) -> Option<Self> {
        let secondary = !settings.round_robin && address != 0 && settings.addresses.len() > 1;
        secondary.then(|| Self::Due(now + PRIMARY_RETRY))
    }

    /// When [`Shard::bridge_probe_tick`] has something to do.
    pub(super) fn due(&self) -> Option<Instant> {
        match self {
            Self::Due(at) | Self::Connecting(_, at, _) => Some(*at),
            Self::Resolving(_) => None,
        }
    }
}

impl Shard {
    /// A probe step that came due.
    pub(super) fn bridge_probe_tick(&mut self, idx: usize, now: Instant) {
        let waker = self.waker();
        let tx = self.bridges.resolved_sender();
        let attempt = self.bridges.next_attempt();
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        if slot.phase != Phase::Open || !slot.link.is_up() {
            return;
        }
        match slot.probe.take() {
            Some(Probe::Due(at)) if at <= now => {
                let Some(primary) = slot.link.settings().addresses.first().cloned() else {
                    return;
                };
                if let Ok(addr) = primary.parse::<SocketAddr>() {
                    return self.bridge_probe_connect(idx, Ok(addr), now);
                }
                slot.probe = Some(Probe::Resolving(attempt));
                let spawned = std::thread::Builder::new()
                    .name("shardmq-resolve".into())
                    .spawn(move || {
                        let result = super::resolve(&primary);
                        let _ = tx.send((idx, attempt, result));
                        let _ = waker.wake();
                    });
                if spawned.is_err() {
                    slot.probe = Some(Probe::Due(now + PRIMARY_RETRY));
                }
            }
            Some(Probe::Connecting(stream, at, give_up)) if at <= now => {
                let outcome = match stream.take_error() {
                    Ok(Some(_)) | Err(_) => Some(false),
                    Ok(None) => match stream.peer_addr() {
                        Ok(_) => Some(true),
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
                        Err(_) => Some(false),
                    },
                };
                match outcome {
                    Some(true) => {
                        drop(stream);
                        self.bridge_back_to_primary(idx, now);
                    }
                    None if now < give_up => {
                        slot.probe = Some(Probe::Connecting(stream, now + PROBE_POLL, give_up));
                    }
                    // Refused, failed, or no answer within PRIMARY_RETRY: next time.
                    _ => slot.probe = Some(Probe::Due(now + PRIMARY_RETRY)),
                }
            }
            other => slot.probe = other,
        }
    }

    /// The primary's address (looked up, or a literal): the probe's TCP connect starts.
    pub(super) fn bridge_probe_connect(
        &mut self,
        idx: usize,
        addr: io::Result<SocketAddr>,
        now: Instant,
    ) {
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        let started = addr.and_then(|addr| match slot.config.bind_address {
            Some(local) => connect_from(local, addr).map(TcpStream::from_std),
            None => TcpStream::connect(addr),
        });
        slot.probe = Some(match started {
            Ok(stream) => Probe::Connecting(stream, now + PROBE_POLL, now + PRIMARY_RETRY),
            Err(_) => Probe::Due(now + PRIMARY_RETRY),
        });
    }

    /// The primary accepts connections again: the bridge leaves the secondary and
    /// connects to the primary now.
    fn bridge_back_to_primary(&mut self, idx: usize, now: Instant) {
        let Some(slot) = self.bridge_end(idx, now) else {
            return;
        };
        slot.address = 0;
        slot.phase = Phase::Idle(now);
        crate::log_notice!(
            "Bridge {}: the primary address {} accepts connections again; switching back to it.",
            slot.link.name(),
            slot.link
                .settings()
                .addresses
                .first()
                .map_or("", String::as_str)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BridgeConfig;

    fn settings(addresses: usize, round_robin: bool) -> Settings {
        let mut b = BridgeConfig::new("b");
        b.addresses = (0..addresses)
            .map(|i| format!("127.0.0.1:{}", 1883 + i))
            .collect();
        b.round_robin = round_robin;
        Settings::new(&b)
    }

    #[test]
    fn only_a_connection_on_a_secondary_without_round_robin_probes_the_primary() {
        let now = Instant::now();
        let due = |p: Option<Probe>| p.and_then(|p| p.due());
        assert_eq!(
            due(Probe::arm(&settings(2, false), 1, now)),
            Some(now + PRIMARY_RETRY)
        );
        assert_eq!(
            due(Probe::arm(&settings(3, false), 2, now)),
            Some(now + PRIMARY_RETRY)
        );
        assert!(
            Probe::arm(&settings(2, false), 0, now).is_none(),
            "on the primary"
        );
        assert!(
            Probe::arm(&settings(2, true), 1, now).is_none(),
            "round_robin true"
        );
        assert!(
            Probe::arm(&settings(1, false), 0, now).is_none(),
            "one address"
        );
    }
}
