//! `resume_session`: where a socket's replay starts, and what one replay may cost. A client that resumes in a
//! loop, or resumes a session full of large events, would make the pod read and send the whole log each time:
//! one resume replays at most `limits.resume_replay_bytes` (the newest events that fit; the ack then says
//! `recovered: false`, as for a log trimmed past the client's position), and one user's replays are counted
//! against `limits.replay_bytes_per_user_per_minute` on every pod (past it, `RATE_LIMITED`).

use serde_json::json;

use super::owned_session;
use crate::app::App;
use crate::conn::Conn;
use crate::error::ClientError;
use crate::protocol::inbound::OwnerProof;
use crate::protocol::outbound as out;
use crate::protocol::position::{replay_from, LogNow, StreamPosition};

/// Events per log read while sizing a replay (the catch-up reads pages of the same size).
const PAGE: usize = 256;

/// A resume token for `who`'s session: valid for `session.idle_ttl_s` (each resume's ack carries a new one,
/// so a session in use keeps a valid token).
pub(super) fn token_for(app: &App, session_id: &str, who: &crate::auth::Identity) -> String {
    let ttl_s = i64::try_from(app.config.session.idle_ttl_s).unwrap_or(i64::MAX / 2);
    app.auth.resume().issue(session_id, who, chrono::Utc::now().timestamp().saturating_add(ttl_s))
}

pub(super) async fn resume(
    conn: &mut Conn,
    rid: Option<&str>,
    session_id: &str,
    after_seq: u64,
    epoch: Option<&str>,
    proof: Option<OwnerProof>,
) -> Result<(), ClientError> {
    let app = conn.app.clone();
    match proof {
        // A socket without the owner's credentials (a reconnect, a reload) proves it, then acts as the owner.
        Some(proof) => {
            let (session, owner) = crate::tenancy::proven_session(&app, session_id, &conn.identity, &proof).await?;
            super::origin_allowed(conn, &session)?;
            conn.act_as(owner).await?;
        }
        None => {
            owned_session(conn, session_id).await?;
        }
    }
    let log = &app.backends.log;
    let (current, bounds) = tokio::join!(log.epoch(session_id), log.bounds(session_id));
    let (current, (oldest, latest)) = (current?, bounds?);
    let pos = StreamPosition { seq: after_seq, epoch: epoch.map(str::to_string) };
    let (from, recovered) = replay_from(&pos, LogNow { epoch: current.as_deref(), oldest, latest });
    let missed = latest > from;
    // A user whose minute is spent is refused before the log is read: sizing the replay is the cost the
    // budget bounds. The first byte is taken here, the rest once the replay is sized.
    if missed {
        app.turns.take_replay(&conn.identity, 1).await?;
    }
    let replay = fit_replay(&app, session_id, from, latest, app.config.limits.resume_replay_bytes).await?;
    let rest = replay.bytes.saturating_sub(1);
    if missed && rest > 0 {
        app.turns.take_replay(&conn.identity, rest).await?;
    }
    let recovered = recovered && !replay.cut;
    conn.reply(&out::immediate(
        rid,
        200,
        "Session resumed",
        json!({"sessionId": session_id, "seq": latest, "epoch": current, "recovered": recovered,
               "resumeToken": token_for(&app, session_id, &conn.identity)}),
    ));
    conn.attach_session(session_id, Some((replay.after, current))).await?;
    Ok(())
}

/// The replay a resume makes: the events after `after`.
#[derive(Debug, PartialEq)]
struct Replay {
    after: u64,
    /// Bytes of the logged events replayed.
    bytes: u64,
    /// Older missed events were left out to stay within the budget.
    cut: bool,
}

/// The newest events after `from` (up to `latest`) whose logged bytes fit `budget`.
async fn fit_replay(app: &App, session_id: &str, from: u64, latest: u64, budget: u64) -> Result<Replay, ClientError> {
    let mut sizes: Vec<(u64, u64)> = Vec::new();
    let mut pos = from;
    while pos < latest {
        let page = app.backends.log.read_after(session_id, pos, PAGE).await?;
        let Some(&(last, _)) = page.last() else { break };
        // Only up to the `latest` the ack reports: events appended since (a turn still streaming) are not the
        // missed range, so they are neither counted nor cut.
        sizes.extend(page.iter().filter(|(seq, _)| *seq <= latest).map(|(seq, json)| (*seq, json.len() as u64)));
        pos = last;
        if page.len() < PAGE {
            break;
        }
    }
    Ok(newest_within(&sizes, from, budget))
}

/// From `(seq, bytes)` in seq order: the replay of the newest that fit `budget`, starting after `from`.
fn newest_within(sizes: &[(u64, u64)], from: u64, budget: u64) -> Replay {
    let mut bytes = 0u64;
    for &(seq, len) in sizes.iter().rev() {
        if bytes + len > budget {
            return Replay { after: seq, bytes, cut: true };
        }
        bytes += len;
    }
    Replay { after: from, bytes, cut: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_events_that_fit_are_replayed() {
        let sizes = [(4, 100), (5, 300), (6, 200), (7, 250)];
        assert_eq!(newest_within(&sizes, 3, 10_000), Replay { after: 3, bytes: 850, cut: false });
        assert_eq!(newest_within(&sizes, 3, 850), Replay { after: 3, bytes: 850, cut: false }, "exactly full");
        assert_eq!(newest_within(&sizes, 3, 760), Replay { after: 4, bytes: 750, cut: true });
        assert_eq!(newest_within(&sizes, 3, 700), Replay { after: 5, bytes: 450, cut: true });
        assert_eq!(
            newest_within(&sizes, 3, 100),
            Replay { after: 7, bytes: 0, cut: true },
            "even the newest is too big"
        );
        assert_eq!(newest_within(&[], 9, 100), Replay { after: 9, bytes: 0, cut: false });
    }
}
