//! A socket's bounded outbound queue. Unlike a channel with preallocated blocks, it allocates only while
//! frames are waiting and gives memory back once drained, which keeps an idle socket small (10k idle sockets
//! per pod is the design point, docs/benchmarks.md).

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Why a push was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The consumer is not keeping up: the caller treats the socket as a slow consumer.
    Full,
    /// The consumer is gone.
    Closed,
}

/// Many producers (hub, handlers), one consumer (the socket's task). Generic so that it knows nothing of what
/// a socket is sent ([`crate::hub::Outbound`]).
pub(crate) struct OutQueue<T> {
    /// The items and the closed flag; locked briefly by every producer and by the one consumer.
    state: Mutex<State<T>>,
    /// Wakes the single consumer; a notification sent while it is not waiting is kept as a permit.
    ready: Notify,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// Capacity kept after a burst has drained; more is released.
const KEEP: usize = 8;

impl<T> OutQueue<T> {
    pub(crate) fn new(capacity: usize) -> OutQueue<T> {
        OutQueue { state: Mutex::new(State { items: VecDeque::new(), closed: false }), ready: Notify::new(), capacity }
    }

    pub(crate) fn push(&self, item: T) -> Result<(), PushError> {
        {
            let mut st = self.state.lock();
            if st.closed {
                return Err(PushError::Closed);
            }
            if st.items.len() >= self.capacity {
                return Err(PushError::Full);
            }
            st.items.push_back(item);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// The next item without waiting.
    pub(crate) fn try_pop(&self) -> Option<T> {
        let mut st = self.state.lock();
        let item = st.items.pop_front();
        if st.items.is_empty() && st.items.capacity() > KEEP {
            st.items.shrink_to(KEEP);
        }
        item
    }

    /// Waits for the next item; `None` once closed and empty.
    pub(crate) async fn pop(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.state.lock().closed {
                return None;
            }
            notified.await;
        }
    }

    /// Refuses further pushes and drops what is queued.
    pub(crate) fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.items = VecDeque::new();
        drop(st);
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn frame(s: &str) -> String {
        s.to_string()
    }

    #[tokio::test]
    async fn bounded_fifo_that_wakes_its_consumer() {
        let q = Arc::new(OutQueue::<String>::new(2));
        assert_eq!(q.push(frame("a")), Ok(()));
        assert_eq!(q.push(frame("b")), Ok(()));
        assert_eq!(q.push(frame("c")), Err(PushError::Full));
        assert_eq!(q.pop().await.as_deref(), Some("a"));
        assert_eq!(q.try_pop().as_deref(), Some("b"));
        assert!(q.try_pop().is_none());
        let consumer = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.push(frame("late")).expect("push");
        assert_eq!(consumer.await.expect("join").as_deref(), Some("late"));
        q.close();
        assert_eq!(q.push(frame("x")), Err(PushError::Closed));
        assert!(q.pop().await.is_none());
    }

    #[test]
    fn memory_is_given_back_after_a_burst() {
        let q = OutQueue::<String>::new(1000);
        for _ in 0..500 {
            q.push(frame("x")).expect("push");
        }
        while q.try_pop().is_some() {}
        assert!(q.state.lock().items.capacity() <= KEEP);
    }
}
