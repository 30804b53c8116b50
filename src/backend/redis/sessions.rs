//! Sessions and conversations: the session record (idle TTL, refreshed on read), the conversation hash, its
//! message list and the per-user conversation index.

use std::collections::HashMap;

use async_trait::async_trait;
use fred::interfaces::{HashesInterface, KeysInterface, ListInterface, SortedSetsInterface};
use fred::types::sorted_sets::Ordering as ZOrdering;
use fred::types::{Expiration, Value};
use futures_util::future::join_all;

use super::conn::{array, corrupt, int, parse_json, text, to_json, RedisStore};
use crate::backend::{
    BResult, ConversationPage, ConversationRecord, Direction, MessagePage, SessionRecord, SessionStore, StoredMessage,
    Summary,
};
use crate::util::now_ms;

/// How recently a TTL may have been refreshed for a use to leave it (`lua/touch.lua`, `lua/append_message.lua`):
/// a minute, or a tenth of the TTL when that is shorter, so a record in steady use costs its expiries once a
/// minute rather than on every use, and still lives at least nine tenths of its TTL after its last use.
fn refresh_period_s(ttl_s: i64) -> i64 {
    (ttl_s / 10).min(60)
}

fn conv_from_hash(map: HashMap<String, String>) -> BResult<Option<ConversationRecord>> {
    if map.is_empty() {
        return Ok(None);
    }
    let field = |k: &str| map.get(k).cloned().ok_or_else(|| corrupt("conversation", format!("missing field {k}")));
    let num = |k: &str| -> BResult<i64> { field(k)?.parse::<i64>().map_err(|e| corrupt("conversation", e)) };
    Ok(Some(ConversationRecord {
        conversation_id: field("conversation_id")?,
        user_id: field("user_id")?,
        org_id: field("org_id")?,
        agent_id: field("agent_id")?,
        title: map.get("title").cloned().unwrap_or_default(),
        created_at_ms: num("created_at_ms")?,
        updated_at_ms: num("updated_at_ms")?,
        message_count: u64::try_from(num("message_count")?).map_err(|e| corrupt("conversation", e))?,
        namespace: map.get("namespace").cloned(),
        supports: map.get("supports").map(|j| parse_json("conversation supports", j)).transpose()?,
    }))
}

impl RedisStore {
    /// A page of the conversations in an index (a user's or an org's), most recently updated first.
    async fn conversations_in(&self, key: &str, offset: usize, limit: usize) -> BResult<ConversationPage> {
        let s = self.s();
        let total: u64 = s.client.zcard(key).await.map_err(|e| s.err(e))?;
        if limit == 0 {
            return Ok(ConversationPage { conversations: Vec::new(), has_more: total as usize > offset });
        }
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let stop = i64::try_from(offset.saturating_add(limit) - 1).unwrap_or(i64::MAX);
        // ZREVRANGE orders equal scores by member descending: updated desc, then conversation id desc, as memory.
        let ids: Vec<String> = s.client.zrevrange(key, start, stop, false).await.map_err(|e| s.err(e))?;
        let fetched = join_all(ids.iter().map(|cid| self.get_conversation(cid))).await;
        let mut conversations = Vec::with_capacity(ids.len());
        for (cid, c) in ids.iter().zip(fetched) {
            match c? {
                Some(c) => conversations.push(c),
                // Expired (`session.conversation_ttl_s`): its place in the list goes too.
                None => s.client.zrem::<(), _, _>(key, cid.as_str()).await.map_err(|e| s.err(e))?,
            }
        }
        let has_more = total as usize > offset + ids.len();
        Ok(ConversationPage { conversations, has_more })
    }

    /// Puts a conversation at `updated_ms` in its owner's list and its org's (GT: two pods racing keep the
    /// later time). Separate commands: the indexes live on other slots than the conversation. The two indexes
    /// are written concurrently (fred pipelines them): two round trips per message append, not four.
    /// Moves a conversation up its owner's and its org's index; `renew` also renews the indexes' expiry (done
    /// when the conversation's own was: an index lives as long as its most recent conversation).
    async fn index_conversation(
        &self,
        org_id: &str,
        user_id: &str,
        cid: &str,
        updated_ms: i64,
        renew: bool,
    ) -> BResult<()> {
        let s = self.s();
        let index = |key: String| async move {
            s.client
                .zadd::<(), _, _>(&key, None, Some(ZOrdering::GreaterThan), false, false, (updated_ms as f64, cid))
                .await
                .map_err(|e| s.err(e))?;
            // After the ZADD: an EXPIRE on a key that does not exist yet would do nothing.
            if renew {
                s.client.expire::<(), _>(&key, s.conv_ttl_s, None).await.map_err(|e| s.err(e))?;
            }
            Ok::<(), crate::backend::BackendError>(())
        };
        futures_util::future::try_join(index(s.keys.user_convs(org_id, user_id)), index(s.keys.org_convs(org_id)))
            .await?;
        Ok(())
    }

    /// Lists a new conversation in its owner's index and its org's, pruning members whose conversations have
    /// expired and, past `session.conversations_per_user`, deleting the owner's least recently used ones: the
    /// indexes grow only here, so they stay bounded.
    async fn index_new_conversation(&self, c: &ConversationRecord) -> BResult<()> {
        let s = self.s();
        let oldest_live = crate::util::now_ms().saturating_sub(s.conv_ttl_s.saturating_mul(1_000));
        let args = |cap: usize| {
            vec![
                c.updated_at_ms.to_string(),
                c.conversation_id.clone(),
                oldest_live.to_string(),
                s.conv_ttl_s.to_string(),
                cap.to_string(),
            ]
        };
        let user = s.eval(
            &s.scripts.index_conversation,
            vec![s.keys.user_convs(&c.org_id, &c.user_id)],
            args(s.convs_per_user),
        );
        let org = s.eval(&s.scripts.index_conversation, vec![s.keys.org_convs(&c.org_id)], args(0));
        let (user, org) = tokio::join!(user, org);
        org?;
        let trimmed: Vec<String> = array(user?).iter().filter_map(text).collect();
        for cid in &trimmed {
            // Past the cap: the conversation goes with its place (a session on it finds it gone).
            s.client.del::<(), _>(vec![s.keys.conv(cid), s.keys.msgs(cid)]).await.map_err(|e| s.err(e))?;
            s.client.zrem::<(), _, _>(s.keys.org_convs(&c.org_id), cid.as_str()).await.map_err(|e| s.err(e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(
        &self,
        session: &SessionRecord,
        new_conversation: Option<&ConversationRecord>,
    ) -> BResult<()> {
        let s = self.s();
        let key = s.keys.session_key(&session.session_id, "session");
        s.client
            .set::<(), _, _>(&key, to_json(session)?, Some(Expiration::EX(s.idle_ttl_s)), None, false)
            .await
            .map_err(|e| s.err(e))?;
        if let Some(c) = new_conversation {
            let mut fields: Vec<(&str, String)> = vec![
                ("conversation_id", c.conversation_id.clone()),
                ("user_id", c.user_id.clone()),
                ("org_id", c.org_id.clone()),
                ("agent_id", c.agent_id.clone()),
                ("title", c.title.clone()),
                ("created_at_ms", c.created_at_ms.to_string()),
                ("updated_at_ms", c.updated_at_ms.to_string()),
                ("message_count", c.message_count.to_string()),
            ];
            if let Some(ns) = &c.namespace {
                fields.push(("namespace", ns.clone()));
            }
            if let Some(sup) = &c.supports {
                fields.push(("supports", serde_json::to_string(sup).map_err(|e| corrupt("supports", e))?));
            }
            s.client.hset::<(), _, _>(s.keys.conv(&c.conversation_id), fields).await.map_err(|e| s.err(e))?;
            // Until its first message a conversation lives `session.empty_conversation_ttl_s` (an abandoned
            // page's session costs an hour); the first message gives it the full retention.
            let ttl = if c.message_count == 0 { s.empty_conv_ttl_s.min(s.conv_ttl_s) } else { s.conv_ttl_s };
            s.client.expire::<(), _>(s.keys.conv(&c.conversation_id), ttl, None).await.map_err(|e| s.err(e))?;
            self.index_new_conversation(c).await?;
        }
        // Replicated (`redis_wait_replicas`): the client is told of the session only once replicas have it (and
        // its conversation: in a cluster another node's), so a failover cannot leave it a session not found.
        let conv = new_conversation.map(|c| s.keys.conv(&c.conversation_id));
        let (session, conv) = tokio::join!(s.fence_key(&key, None), async {
            match &conv {
                Some(conv) if s.cluster => s.fence_key(conv, None).await,
                _ => Ok(()),
            }
        });
        session.and(conv)
    }

    async fn get_session(&self, session_id: &str) -> BResult<Option<SessionRecord>> {
        let s = self.s();
        let period_s = refresh_period_s(s.idle_ttl_s);
        let now = now_ms();
        // When this pod refreshed them within the period, they still have more than `idle - 2 × period` to run
        // (eight tenths of the TTL): a session in steady use pays for its expiries' check once a period per pod.
        let lately = s.touched.get(session_id).is_some_and(|at| now - at < period_s * 1000);
        let reply = if lately {
            // A plain read: one command, not the script's four.
            s.client.get::<Value, _>(s.keys.session_key(session_id, "session")).await.map_err(|e| s.err(e))?
        } else {
            // Reads the record and refreshes the idle TTL of the session and of its log, counter and epoch in one
            // step: the log must not expire under a live session (its seq would restart in a new epoch).
            let keys =
                ["session", "seq", "log", "epoch", "contact"].map(|k| s.keys.session_key(session_id, k)).to_vec();
            let args = vec![s.idle_ttl_s.to_string(), period_s.to_string()];
            s.eval(&s.scripts.touch, keys, args).await?
        };
        match text(&reply) {
            Some(r) => {
                if !lately {
                    s.touched.set(session_id, now);
                }
                parse_json("session", &r).map(Some)
            }
            None => {
                s.touched.forget(session_id);
                Ok(None)
            }
        }
    }

    async fn get_conversation(&self, conversation_id: &str) -> BResult<Option<ConversationRecord>> {
        let s = self.s();
        let map: HashMap<String, String> =
            s.client.hgetall(s.keys.conv(conversation_id)).await.map_err(|e| s.err(e))?;
        conv_from_hash(map)
    }

    async fn append_message(&self, conversation_id: &str, message: &StoredMessage, now_ms: i64) -> BResult<bool> {
        let s = self.s();
        let inbound = if message.direction == Direction::Inbound { "1" } else { "0" };
        let args = vec![
            to_json(message)?,
            now_ms.to_string(),
            inbound.into(),
            crate::backend::title_from(&message.text),
            s.conv_ttl_s.to_string(),
            s.conv_max_messages.to_string(),
            // The resend guard's token: a message id never holds a space (see the script).
            message.id.replace(' ', "_"),
            refresh_period_s(s.conv_ttl_s).saturating_mul(1000).to_string(),
        ];
        let keys = vec![s.keys.conv(conversation_id), s.keys.msgs(conversation_id)];
        // Resend-safe by itself (a resend finds its message id among the recent ones).
        let reply = s.eval(&s.scripts.append_message, keys, args).await?;
        let owner = array(reply);
        match (owner.first().and_then(text), owner.get(1).and_then(text)) {
            (Some(user_id), Some(org_id)) => {
                // The indexes order conversations by their people's activity: the user's messages move them,
                // the replies (seconds later, in the same turn) do not, which saves a turn two commands. Their
                // expiry is renewed with the conversation's.
                let renewed = owner.get(2).and_then(int) == Some(1);
                if message.direction == Direction::Inbound || renewed {
                    self.index_conversation(&org_id, &user_id, conversation_id, now_ms, renewed).await?;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn messages_page(&self, conversation_id: &str, before: Option<u64>, limit: usize) -> BResult<MessagePage> {
        let s = self.s();
        let before = before.map(|b| b.to_string()).unwrap_or_default();
        let reply = s
            .eval(
                &s.scripts.messages_page,
                vec![s.keys.msgs(conversation_id), s.keys.conv(conversation_id)],
                vec![before, limit.to_string()],
            )
            .await?;
        let mut items = array(reply).into_iter();
        let start = items.next().as_ref().and_then(int).ok_or_else(|| corrupt("messages page", "no start index"))?;
        let has_more =
            items.next().as_ref().and_then(int).ok_or_else(|| corrupt("messages page", "no more flag"))? == 1;
        let mut messages = items
            .map(|v| text(&v).ok_or_else(|| corrupt("message", "not text")).and_then(|t| parse_json("message", &t)))
            .collect::<BResult<Vec<StoredMessage>>>()?;
        messages.reverse();
        let start = u64::try_from(start).map_err(|e| corrupt("messages page", e))?;
        Ok(MessagePage { messages, oldest_index: start, has_more })
    }

    async fn recent_messages(&self, conversation_id: &str, n: usize) -> BResult<Vec<StoredMessage>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let s = self.s();
        let from = -(i64::try_from(n).unwrap_or(i64::MAX));
        let raw: Vec<String> = s.client.lrange(s.keys.msgs(conversation_id), from, -1).await.map_err(|e| s.err(e))?;
        raw.iter().map(|r| parse_json("message", r)).collect()
    }

    async fn list_conversations(
        &self,
        org_id: &str,
        user_id: &str,
        offset: usize,
        limit: usize,
    ) -> BResult<ConversationPage> {
        self.conversations_in(&self.s().keys.user_convs(org_id, user_id), offset, limit).await
    }

    async fn list_org_conversations(&self, org_id: &str, offset: usize, limit: usize) -> BResult<ConversationPage> {
        self.conversations_in(&self.s().keys.org_convs(org_id), offset, limit).await
    }

    async fn delete_session(&self, session: &SessionRecord) -> BResult<()> {
        let s = self.s();
        let sid = &session.session_id;
        let cid = &session.conversation_id;
        // One slot each: the session's keys, then the conversation's. The seq counter stays: a socket still
        // attached keeps its position, and the namespace's next turn continues after it instead of starting at 1.
        // The lease, the turn record and its step go: a turn running in the session stops (its appends are refused), so
        // neither its events nor an ending bring the deleted log back.
        let session_keys: Vec<String> =
            ["session", "log", "toks", "confirm", "decided", "last", "contact", "otp", "lease", "turn", "step"]
                .iter()
                .map(|w| s.keys.session_key(sid, w))
                .collect();
        s.client.del::<(), _>(session_keys).await.map_err(|e| s.err(e))?;
        s.client.del::<(), _>(vec![s.keys.conv(cid), s.keys.msgs(cid)]).await.map_err(|e| s.err(e))?;
        for index in [s.keys.user_convs(&session.org_id, &session.user_id), s.keys.org_convs(&session.org_id)] {
            s.client.zrem::<(), _, _>(index, cid.as_str()).await.map_err(|e| s.err(e))?;
        }
        Ok(())
    }

    async fn rename_conversation(&self, conversation_id: &str, title: &str) -> BResult<bool> {
        let s = self.s();
        let reply = s
            .eval(&s.scripts.rename, vec![s.keys.conv(conversation_id)], vec!["title".into(), title.to_string()])
            .await?;
        Ok(int(&reply) == Some(1))
    }

    async fn summary(&self, conversation_id: &str) -> BResult<Option<Summary>> {
        let s = self.s();
        let raw: Option<String> = s.client.hget(s.keys.conv(conversation_id), "summary").await.map_err(|e| s.err(e))?;
        raw.map(|r| parse_json("summary", &r)).transpose()
    }

    async fn set_summary(&self, conversation_id: &str, summary: &Summary) -> BResult<bool> {
        let s = self.s();
        // A field of the conversation's hash: it expires and is deleted with the conversation.
        let args = vec!["summary".into(), to_json(summary)?];
        let reply = s.eval(&s.scripts.rename, vec![s.keys.conv(conversation_id)], args).await?;
        Ok(int(&reply) == Some(1))
    }

    async fn set_conversation_supports(&self, conversation_id: &str, supports: &[String]) -> BResult<bool> {
        let s = self.s();
        let json = serde_json::to_string(supports).map_err(|e| corrupt("supports", e))?;
        let reply =
            s.eval(&s.scripts.rename, vec![s.keys.conv(conversation_id)], vec!["supports".into(), json]).await?;
        Ok(int(&reply) == Some(1))
    }
}
