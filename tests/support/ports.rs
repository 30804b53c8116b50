//! Free-port selection for the processes and servers the tests start.
//!
//! Servers written in Rust bind `127.0.0.1:0` directly and never need this; it exists for external
//! processes (`redis-server`) that must be told their port up front, and for restarts on the same port.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// Cluster bus ports are `port + 10000`, so cluster ports must stay below this to keep the bus port valid
/// and out of the top of the ephemeral range, where outgoing connections would compete for it.
pub const MAX_CLUSTER_PORT: u16 = 55_000;

/// Ports already handed out in this process: the kernel may offer a port again as soon as the probing
/// listener is dropped, and two tests starting Redis in parallel must not both be told the same one.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn pick(accept: impl Fn(u16) -> bool) -> u16 {
    for _ in 0..1000 {
        // Let the kernel choose: it knows what is in use right now, which a counter or a random guess does not.
        let port =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port();
        if port == 6379 || !accept(port) {
            continue;
        }
        let mut taken = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if taken.insert(port) {
            return port;
        }
    }
    panic!("could not find a free port on 127.0.0.1 after 1000 tries");
}

/// A port on 127.0.0.1 that was free a moment ago and has not been handed out before in this process.
///
/// Another process can still take it before the caller binds; callers that launch processes retry with a
/// new port when that happens.
pub fn free_port() -> u16 {
    pick(|_| true)
}

/// Like [`free_port`], but below [`MAX_CLUSTER_PORT`] and with `port + 10000` free too, for the cluster bus.
pub fn free_cluster_port() -> u16 {
    pick(|p| p < MAX_CLUSTER_PORT && bindable(p + 10_000))
}
