//! Admission control of the listener: which TCP connections get a handshake, which handshake
//! makes room for a newer one, and which finished connections may stay open.
//!
//! Every accepted TCP connection gets a [`Lease`] (or is refused at once). The lease is the
//! connection's place in the counts: a handshake in flight first, then an open connection
//! (anonymous or not), until it is dropped. The accept loop never waits here: when the
//! handshakes in flight reach a cap, the oldest one still waiting for its ClientHello (else
//! the oldest one) is shed and the new connection takes its place, so a flood of silent or
//! half-sent handshakes cannot fill the kernel's backlog and starve real clients.
//!
//! All state is keyed by client address and holds only live connections: its size is bounded
//! by the caps, and every operation is O(log n) in the handshakes in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::tls::handshake_error::ShedCause;
use crate::tls::stats::HandshakeCounters;

/// The caps one listener enforces.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) max_handshakes: usize,
    pub(crate) max_handshakes_per_ip: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_anonymous: usize,
    pub(crate) max_anonymous_per_ip: usize,
}

/// One listener's admission state; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    counters: Arc<HandshakeCounters>,
    state: Mutex<State>,
}

/// Where a handshake is: the order of the variants is the order in which they are shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// No complete ClientHello yet: what silent and half-sent clients look like.
    AwaitingHello,
    /// The ClientHello arrived; the rest of the handshake runs.
    Handshaking,
}

/// A handshake in flight: its phase, then its age (ids grow).
type Slot = (Phase, u64);

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    // The first entry is the next one to shed.
    handshakes: BTreeMap<Slot, InFlight>,
    clients: HashMap<Client, PerClient>,
    open: usize,
    anonymous: usize,
}

#[derive(Debug)]
struct InFlight {
    client: Client,
    shed: oneshot::Sender<ShedCause>,
}

#[derive(Debug, Default)]
struct PerClient {
    handshakes: BTreeSet<Slot>,
    open: usize,
    anonymous: usize,
}

/// Who counts as one client: an IPv4 address, or an IPv6 /64 (one host or one LAN: a single
/// machine commonly holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Client {
    V4(Ipv4Addr),
    V6Prefix(u64),
}

impl Client {
    fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4),
                None => Client::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: Limits, counters: Arc<HandshakeCounters>) -> Self {
        Admission {
            inner: Arc::new(Inner {
                limits,
                counters,
                state: Mutex::default(),
            }),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Admits a new TCP connection from `peer` to its handshake, shedding an older handshake
    /// if a cap on handshakes is reached; refuses it when its address, or the listener, has
    /// as many open connections as allowed.
    pub(crate) fn admit(&self, peer: IpAddr) -> Result<Lease, ShedCause> {
        let inner = &self.inner;
        let limits = &inner.limits;
        let client = Client::of(peer);
        let mut state = inner.lock();
        let per_client = state.clients.get(&client);
        let refused = if state.open >= limits.max_connections {
            Some(ShedCause::Connections)
        } else if per_client.is_some_and(|c| c.open >= limits.max_connections_per_ip) {
            Some(ShedCause::ConnectionsPerIp)
        } else {
            None
        };
        if let Some(cause) = refused {
            inner.counters.record_shed(cause);
            return Err(cause);
        }
        let own_victim = per_client
            .filter(|c| c.handshakes.len() >= limits.max_handshakes_per_ip)
            .and_then(|c| c.handshakes.first().copied());
        if let Some(victim) = own_victim {
            state.shed(victim, ShedCause::HandshakesInFlightPerIp, &inner.counters);
        }
        if state.handshakes.len() >= limits.max_handshakes {
            if let Some(victim) = state.handshakes.keys().next().copied() {
                state.shed(victim, ShedCause::HandshakesInFlight, &inner.counters);
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let slot = (Phase::AwaitingHello, id);
        let (shed, shed_rx) = oneshot::channel();
        state.handshakes.insert(slot, InFlight { client, shed });
        state
            .clients
            .entry(client)
            .or_default()
            .handshakes
            .insert(slot);
        inner.counters.handshakes_in_flight().up();
        Ok(Lease {
            inner: inner.clone(),
            id,
            client,
            stage: Stage::Handshake,
            shed: Some(shed_rx),
        })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Counts only: a panic elsewhere cannot leave them half-updated in a way that matters
        // more than refusing every connection would.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn shed(&mut self, slot: Slot, cause: ShedCause, counters: &HandshakeCounters) {
        if let Some(in_flight) = self.remove_slot(slot) {
            counters.record_shed(cause);
            counters.handshakes_in_flight().down();
            // The handshake task may have just finished; then nobody listens, which is fine.
            let _ = in_flight.shed.send(cause);
        }
    }

    fn remove_slot(&mut self, slot: Slot) -> Option<InFlight> {
        let in_flight = self.handshakes.remove(&slot)?;
        if let Some(client) = self.clients.get_mut(&in_flight.client) {
            client.handshakes.remove(&slot);
        }
        self.prune(in_flight.client);
        Some(in_flight)
    }

    /// Removes handshake `id`, whatever its phase; `false` if it was no longer in flight (shed).
    fn end_handshake(&mut self, id: u64, counters: &HandshakeCounters) -> bool {
        let removed = [Phase::AwaitingHello, Phase::Handshaking]
            .into_iter()
            .any(|phase| self.remove_slot((phase, id)).is_some());
        if removed {
            counters.handshakes_in_flight().down();
        }
        removed
    }

    /// Forgets a client that holds nothing, so that the map only ever holds live clients.
    fn prune(&mut self, client: Client) {
        if self
            .clients
            .get(&client)
            .is_some_and(|c| c.handshakes.is_empty() && c.open == 0 && c.anonymous == 0)
        {
            self.clients.remove(&client);
        }
    }
}

/// One connection's place in the listener's counts, from TCP accept to close; dropping it
/// frees the place.
#[derive(Debug)]
pub(crate) struct Lease {
    inner: Arc<Inner>,
    id: u64,
    client: Client,
    stage: Stage,
    // Dropped once the handshake is over: polling it registered the handshake task's waker in
    // the channel, and tokio keeps that waker (and with it the finished task's memory) for as
    // long as the channel lives.
    shed: Option<oneshot::Receiver<ShedCause>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Handshake,
    Open { anonymous: bool },
    Closed,
}

/// Tells the admission that a handshake's ClientHello has arrived, which moves it to the back
/// of the shedding order.
#[derive(Debug)]
pub(crate) struct HelloReceived {
    inner: Arc<Inner>,
    id: u64,
}

impl HelloReceived {
    pub(crate) fn received(self) {
        let mut state = self.inner.lock();
        let waiting = (Phase::AwaitingHello, self.id);
        if let Some(in_flight) = state.handshakes.remove(&waiting) {
            let started = (Phase::Handshaking, self.id);
            if let Some(client) = state.clients.get_mut(&in_flight.client) {
                client.handshakes.remove(&waiting);
                client.handshakes.insert(started);
            }
            state.handshakes.insert(started, in_flight);
        }
    }
}

impl Lease {
    /// The hook the handshake calls once the ClientHello is in.
    pub(crate) fn hello_hook(&self) -> HelloReceived {
        HelloReceived {
            inner: self.inner.clone(),
            id: self.id,
        }
    }

    /// Completes when the admission sheds this handshake, with the cause; never otherwise.
    pub(crate) async fn shed(&mut self) -> ShedCause {
        match self.shed.as_mut() {
            Some(shed) => match shed.await {
                Ok(cause) => cause,
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// The handshake finished: the connection becomes an open one, `anonymous` if the client
    /// sent no certificate, unless that would exceed a cap (or it was shed meanwhile).
    pub(crate) fn establish(&mut self, anonymous: bool) -> Result<(), ShedCause> {
        if self.stage != Stage::Handshake {
            return Err(ShedCause::HandshakesInFlight);
        }
        let shed = self.shed.take();
        let inner = &self.inner;
        let limits = &inner.limits;
        let mut state = inner.lock();
        if !state.end_handshake(self.id, &inner.counters) {
            self.stage = Stage::Closed;
            return Err(shed
                .and_then(|mut shed| shed.try_recv().ok())
                .unwrap_or(ShedCause::HandshakesInFlight));
        }
        let (open, own_open, anon, own_anon) = {
            let c = state.clients.get(&self.client);
            (
                state.open,
                c.map_or(0, |c| c.open),
                state.anonymous,
                c.map_or(0, |c| c.anonymous),
            )
        };
        let refused = if open >= limits.max_connections {
            Some(ShedCause::Connections)
        } else if own_open >= limits.max_connections_per_ip {
            Some(ShedCause::ConnectionsPerIp)
        } else if anonymous && anon >= limits.max_anonymous {
            Some(ShedCause::AnonymousConnections)
        } else if anonymous && own_anon >= limits.max_anonymous_per_ip {
            Some(ShedCause::AnonymousConnectionsPerIp)
        } else {
            None
        };
        if let Some(cause) = refused {
            inner.counters.record_shed(cause);
            state.prune(self.client);
            self.stage = Stage::Closed;
            return Err(cause);
        }
        state.open += 1;
        inner.counters.open_connections().up();
        let client = state.clients.entry(self.client).or_default();
        client.open += 1;
        if anonymous {
            client.anonymous += 1;
            state.anonymous += 1;
            inner.counters.anonymous_connections().up();
        }
        self.stage = Stage::Open { anonymous };
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let inner = &self.inner;
        let mut state = inner.lock();
        match self.stage {
            Stage::Handshake => {
                state.end_handshake(self.id, &inner.counters);
            }
            Stage::Open { anonymous } => {
                state.open = state.open.saturating_sub(1);
                inner.counters.open_connections().down();
                if anonymous {
                    state.anonymous = state.anonymous.saturating_sub(1);
                    inner.counters.anonymous_connections().down();
                }
                if let Some(client) = state.clients.get_mut(&self.client) {
                    client.open = client.open.saturating_sub(1);
                    if anonymous {
                        client.anonymous = client.anonymous.saturating_sub(1);
                    }
                }
                state.prune(self.client);
            }
            Stage::Closed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_handshakes: 4,
            max_handshakes_per_ip: 2,
            max_connections: 5,
            max_connections_per_ip: 3,
            max_anonymous: 2,
            max_anonymous_per_ip: 1,
        }
    }

    fn admission(limits: Limits) -> (Admission, Arc<HandshakeCounters>) {
        let counters = Arc::new(HandshakeCounters::default());
        (Admission::new(limits, counters.clone()), counters)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn shed_cause(lease: &mut Lease) -> Option<ShedCause> {
        lease.shed.as_mut().and_then(|shed| shed.try_recv().ok())
    }

    fn clients(admission: &Admission) -> usize {
        admission.inner.lock().clients.len()
    }

    #[test]
    fn a_full_address_sheds_its_own_oldest_handshake() {
        let (admission, counters) = admission(limits());
        let mut first = admission.admit(ip(2)).unwrap();
        let mut second = admission.admit(ip(2)).unwrap();
        let mut other = admission.admit(ip(3)).unwrap();
        let _third = admission.admit(ip(2)).unwrap();
        assert_eq!(
            shed_cause(&mut first),
            Some(ShedCause::HandshakesInFlightPerIp)
        );
        assert_eq!(shed_cause(&mut second), None);
        assert_eq!(shed_cause(&mut other), None, "another address is untouched");
        let stats = counters.snapshot();
        assert_eq!(stats.shed(ShedCause::HandshakesInFlightPerIp), 1);
        assert_eq!(stats.handshakes_in_flight, 3);
        // The shed one cannot become a connection.
        assert!(first.establish(false).is_err());
        let mut fourth = admission.admit(ip(2)).unwrap();
        assert_eq!(
            second.establish(false),
            Err(ShedCause::HandshakesInFlightPerIp)
        );
        fourth.establish(false).unwrap();
    }

    #[test]
    fn the_global_cap_sheds_handshakes_awaiting_their_hello_first() {
        let (admission, counters) = admission(limits());
        let mut a = admission.admit(ip(1)).unwrap();
        let mut b = admission.admit(ip(2)).unwrap();
        let mut c = admission.admit(ip(3)).unwrap();
        let mut d = admission.admit(ip(4)).unwrap();
        // `a` is the oldest but has sent its ClientHello: `b` goes first.
        a.hello_hook().received();
        let _e = admission.admit(ip(5)).unwrap();
        assert_eq!(shed_cause(&mut b), Some(ShedCause::HandshakesInFlight));
        assert_eq!(shed_cause(&mut a), None);
        // Everyone has sent a hello: the oldest goes.
        for lease in [&c, &d] {
            lease.hello_hook().received();
        }
        let f = admission.admit(ip(6)).unwrap();
        assert_eq!(shed_cause(&mut c), None, "waiting `_e` went first");
        f.hello_hook().received();
        let _g = admission.admit(ip(7)).unwrap();
        assert_eq!(shed_cause(&mut d), None);
        assert_eq!(shed_cause(&mut a), Some(ShedCause::HandshakesInFlight));
        assert_eq!(counters.snapshot().handshakes_in_flight, 4);
    }

    #[test]
    fn connection_caps_refuse_and_count() {
        let (admission, counters) = admission(limits());
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut lease = admission.admit(ip(2)).unwrap();
            lease.establish(false).unwrap();
            open.push(lease);
        }
        assert_eq!(
            admission.admit(ip(2)).unwrap_err(),
            ShedCause::ConnectionsPerIp
        );
        for last in [3, 4] {
            let mut lease = admission.admit(ip(last)).unwrap();
            lease.establish(false).unwrap();
            open.push(lease);
        }
        assert_eq!(admission.admit(ip(9)).unwrap_err(), ShedCause::Connections);
        // A handshake admitted before the cap was reached is refused when it finishes.
        open.pop();
        let mut late = admission.admit(ip(9)).unwrap();
        let mut later = admission.admit(ip(8)).unwrap();
        late.establish(false).unwrap();
        assert_eq!(later.establish(false), Err(ShedCause::Connections));
        let stats = counters.snapshot();
        assert_eq!(stats.shed(ShedCause::Connections), 2);
        assert_eq!(stats.shed(ShedCause::ConnectionsPerIp), 1);
        assert_eq!(stats.open_connections, 5);
        assert_eq!(stats.handshakes_in_flight, 0);
    }

    #[test]
    fn anonymous_connections_have_lower_caps() {
        let (admission, counters) = admission(limits());
        let mut first = admission.admit(ip(2)).unwrap();
        first.establish(true).unwrap();
        let mut second = admission.admit(ip(2)).unwrap();
        assert_eq!(
            second.establish(true),
            Err(ShedCause::AnonymousConnectionsPerIp)
        );
        let mut verified = admission.admit(ip(2)).unwrap();
        verified.establish(false).unwrap();
        let mut other = admission.admit(ip(3)).unwrap();
        other.establish(true).unwrap();
        let mut third = admission.admit(ip(4)).unwrap();
        assert_eq!(third.establish(true), Err(ShedCause::AnonymousConnections));
        assert_eq!(counters.snapshot().anonymous_connections, 2);
        drop(first);
        let mut again = admission.admit(ip(2)).unwrap();
        again.establish(true).unwrap();
    }

    #[test]
    fn state_holds_only_live_clients() {
        let (admission, counters) = admission(limits());
        let mut leases = Vec::new();
        for last in 0..50 {
            let Ok(mut lease) = admission.admit(ip(last % 7)) else {
                continue;
            };
            if last % 2 == 0 {
                let _ = lease.establish(last % 4 == 0);
            }
            leases.push(lease);
        }
        assert!(clients(&admission) <= 5 + 4, "{}", clients(&admission));
        drop(leases);
        assert_eq!(clients(&admission), 0);
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.handshakes_in_flight,
                stats.open_connections,
                stats.anonymous_connections
            ),
            (0, 0, 0)
        );
        assert!(admission.inner.lock().handshakes.is_empty());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::of(a), Client::of(b));
        assert_ne!(Client::of(a), Client::of(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(Client::of(mapped), Client::of(ip(2)));
    }
}
