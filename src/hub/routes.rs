//! The local sockets of one channel, as the hub routes to them. Nearly every session channel has one socket,
//! and an idle pod holds 10k of them: one socket is kept inline (a map of one would cost every session ~250
//! bytes of table), many in a map (a user's or an org's channel, a session open in several tabs).

use std::collections::HashMap;

use super::ConnHandle;
#[cfg(test)]
use super::Handle;

pub(super) enum Routes {
    One(ConnHandle),
    /// Boxed on purpose (the extra allocation is paid only by channels with several sockets): a route is then 16
    /// bytes, and the one-socket case pays nothing for the map's 48.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<u64, ConnHandle>>),
}

impl Routes {
    pub(super) fn new(conn: ConnHandle) -> Routes {
        Routes::One(conn)
    }

    /// Adds a socket (again: replaces its handle).
    pub(super) fn insert(&mut self, conn: ConnHandle) {
        match self {
            Routes::One(only) if only.id == conn.id => *only = conn,
            Routes::One(only) => {
                let map = HashMap::from([(only.id, only.clone()), (conn.id, conn)]);
                *self = Routes::Many(Box::new(map));
            }
            Routes::Many(map) => {
                map.insert(conn.id, conn);
            }
        }
    }

    /// Removes a socket; true when none is left (the channel's route goes).
    pub(super) fn remove(&mut self, id: u64) -> bool {
        match self {
            Routes::One(only) => only.id == id,
            Routes::Many(map) => {
                map.remove(&id);
                map.is_empty()
            }
        }
    }

    pub(super) fn each(&self, mut f: impl FnMut(&ConnHandle)) {
        match self {
            Routes::One(only) => f(only),
            Routes::Many(map) => map.values().for_each(f),
        }
    }

    pub(super) fn handles(&self) -> Vec<ConnHandle> {
        let mut all = Vec::new();
        self.each(|c| all.push(c.clone()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn handle(id: u64) -> ConnHandle {
        ConnHandle::new(Handle {
            id,
            connection_id: Arc::from(format!("c{id}")),
            queue: Arc::new(crate::queue::OutQueue::new(4)),
            slow: tokio_util::sync::CancellationToken::new(),
            watcher: false,
        })
    }

    fn ids(r: &Routes) -> Vec<u64> {
        let mut ids = Vec::new();
        r.each(|c| ids.push(c.id));
        ids.sort_unstable();
        ids
    }

    #[test]
    fn one_socket_then_many_then_none() {
        let mut r = Routes::new(handle(1));
        r.insert(handle(1));
        assert_eq!(ids(&r), [1], "the same socket twice is one route");
        assert!(matches!(r, Routes::One(_)));
        r.insert(handle(2));
        r.insert(handle(3));
        assert_eq!(ids(&r), [1, 2, 3]);
        assert!(!r.remove(2));
        assert!(!r.remove(9), "an unknown socket changes nothing");
        assert_eq!(r.handles().len(), 2);
        assert!(!r.remove(1));
        assert!(r.remove(3), "the last socket empties the channel");
    }

    #[test]
    fn a_route_is_small() {
        // One per channel a pod routes (10k idle sockets hold 10k session channels): docs/benchmarks.md.
        assert!(std::mem::size_of::<Routes>() <= 16, "{}", std::mem::size_of::<Routes>());
    }

    #[test]
    fn a_lone_socket_other_than_the_one_removed_stays() {
        let mut r = Routes::new(handle(1));
        assert!(!r.remove(2));
        assert_eq!(ids(&r), [1]);
        assert!(r.remove(1));
    }
}
