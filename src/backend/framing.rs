//! The bus framing of session channels, owned by the backends that write it: one bus message carries a batch of
//! logged events as a header line `<first seq>:<epoch>` followed by the events' JSON, one per line (JSON text never
//! holds a raw newline); event `i` has seq `first + i`. Writing it costs a backend no work per event (the Redis
//! script publishes the header and the batch the pod joined, as they are). The memory backend writes it with
//! [`message`], the Redis backend in `lua/append_batch.lua`; both decode it here into a [`SessionBatch`] before
//! anyone else sees the message, so the hub gets typed events. The payload is kept whole and shared: an event is
//! a range of it, never a copy. Messages of the older form (`<seq>:<epoch>:<json>` per line) decode too.

use std::ops::Range;
use std::sync::Arc;

use super::{BusEvent, Channel};

/// One logged event inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramedEvent {
    pub seq: u64,
    epoch: Range<usize>,
    json: Range<usize>,
}

/// The events of one session bus message, in seq order, over the shared payload.
#[derive(Debug, Clone)]
pub struct SessionBatch {
    payload: Arc<str>,
    events: Arc<[FramedEvent]>,
    /// Lines of an older-form message that were not `<seq>:<epoch>:<json>` (counted, then dropped).
    malformed: usize,
}

impl SessionBatch {
    pub fn decode(payload: Arc<str>) -> SessionBatch {
        let mut events = Vec::new();
        let mut malformed = 0;
        let mut lines = payload.split('\n');
        let header = lines.next().unwrap_or("");
        // `<first>:<epoch>` (no colon in the epoch) opens a batch; otherwise every line is `<seq>:<epoch>:<json>`.
        let batch = header
            .split_once(':')
            .filter(|(_, epoch)| !epoch.contains(':'))
            .and_then(|(first, epoch)| Some((first.parse::<u64>().ok()?, first.len(), epoch.len())));
        let mut start = header.len() + 1;
        match batch {
            Some((first, first_len, epoch_len)) => {
                let epoch = first_len + 1..first_len + 1 + epoch_len;
                for (seq, line) in (first..).zip(lines) {
                    events.push(FramedEvent { seq, epoch: epoch.clone(), json: start..start + line.len() });
                    start += line.len() + 1;
                }
            }
            None => {
                start = 0;
                for line in payload.split('\n') {
                    let at = start;
                    start += line.len() + 1;
                    let parsed = line.split_once(':').and_then(|(seq, rest)| {
                        let (epoch, json) = rest.split_once(':')?;
                        Some((seq.parse::<u64>().ok()?, seq.len(), epoch.len(), json.len()))
                    });
                    match parsed {
                        Some((seq, seq_len, epoch_len, json_len)) => {
                            let epoch_at = at + seq_len + 1;
                            let json_at = epoch_at + epoch_len + 1;
                            events.push(FramedEvent {
                                seq,
                                epoch: epoch_at..epoch_at + epoch_len,
                                json: json_at..json_at + json_len,
                            });
                        }
                        None => malformed += 1,
                    }
                }
            }
        }
        SessionBatch { payload, events: events.into(), malformed }
    }

    pub fn events(&self) -> &[FramedEvent] {
        &self.events
    }

    /// The message as it came over the bus.
    pub fn payload(&self) -> &Arc<str> {
        &self.payload
    }

    pub fn malformed(&self) -> usize {
        self.malformed
    }

    /// The event's JSON (v1 form).
    pub fn json(&self, event: &FramedEvent) -> &str {
        self.payload.get(event.json.clone()).unwrap_or("")
    }

    /// The epoch of the log the event's seq counts in.
    pub fn epoch(&self, event: &FramedEvent) -> &str {
        self.payload.get(event.epoch.clone()).unwrap_or("")
    }
}

/// A session bus message: the batch header, then the events (`events` already joined by newlines).
pub(crate) fn message(first: u64, epoch: &str, events: &str) -> String {
    format!("{first}:{epoch}\n{events}")
}

impl BusEvent {
    /// A bus message as a backend received it: session channels decoded into their batch.
    pub(crate) fn from_wire(channel: Channel, payload: Arc<str>) -> BusEvent {
        match channel {
            Channel::Session(ref sid) => {
                let session_id = Arc::from(sid.as_str());
                BusEvent::Session { channel, session_id, batch: SessionBatch::decode(payload) }
            }
            channel => BusEvent::Message { channel, payload },
        }
    }

    /// The channel and the raw payload of any message (tools and tests that look at the wire).
    pub fn raw(&self) -> Option<(Channel, &Arc<str>)> {
        match self {
            BusEvent::Message { channel, payload } => Some((channel.clone(), payload)),
            BusEvent::Session { channel, batch, .. } => Some((channel.clone(), batch.payload())),
            BusEvent::Resubscribed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_decodes_into_ranges_of_its_payload() {
        let payload: Arc<str> = Arc::from(message(7, "ep1", "{\"a\":1}\n{\"b\":\"x:y\"}"));
        let batch = SessionBatch::decode(payload.clone());
        let seqs: Vec<u64> = batch.events().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [7, 8]);
        assert_eq!(batch.json(&batch.events()[1]), r#"{"b":"x:y"}"#, "colons in the JSON stay in it");
        assert_eq!(batch.epoch(&batch.events()[1]), "ep1");
        assert!(Arc::ptr_eq(batch.payload(), &payload), "no copy");
        assert_eq!(batch.malformed(), 0);
    }

    #[test]
    fn messages_of_the_older_form_still_decode() {
        let old = SessionBatch::decode(Arc::from("7:ep1:{\"a\":1}\n8:ep1:{\"b\":\"x:y\"}"));
        let seqs: Vec<u64> = old.events().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [7, 8]);
        assert_eq!((old.json(&old.events()[1]), old.epoch(&old.events()[0])), (r#"{"b":"x:y"}"#, "ep1"));
        let bad = SessionBatch::decode(Arc::from("x:ep:{}\n9:ep:{}\nnonsense"));
        assert_eq!((bad.events().len(), bad.malformed()), (1, 2));
    }
}
