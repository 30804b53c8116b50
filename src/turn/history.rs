//! How much of a conversation the model is given: the newest `turn.history_messages`, then, newest first,
//! as many as fit `turn.history_tokens`. Tokens are estimated (a token per 4 bytes of text, plus 4 per
//! message for the role and framing): close to what English text costs with the common tokenizers and never
//! model-specific, so the bound holds whatever model an org picks; a tokenizer crate per model family would be
//! exact for one family and wrong for the others.

use crate::backend::StoredMessage;

/// Framing tokens per message (role, separators).
const PER_MESSAGE: usize = 4;

/// The estimated tokens of one message of `text`.
pub(super) fn estimate(text: &str) -> usize {
    text.len().div_ceil(4) + PER_MESSAGE
}

/// The newest of `history` (oldest first) whose estimated tokens fit `budget` (0: no bound). The newest
/// message is kept whatever its size: a conversation never loses its last word.
pub(super) fn within_tokens(history: Vec<StoredMessage>, budget: usize) -> Vec<StoredMessage> {
    if budget == 0 {
        return history;
    }
    let mut used = 0;
    let mut keep = 0;
    for m in history.iter().rev() {
        used += estimate(&m.text);
        if used > budget && keep > 0 {
            break;
        }
        keep += 1;
    }
    let drop = history.len() - keep;
    history.into_iter().skip(drop).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Direction;

    fn msg(text: &str) -> StoredMessage {
        StoredMessage { id: text.into(), direction: Direction::Inbound, text: text.into(), created_at: String::new() }
    }

    #[test]
    fn the_newest_messages_that_fit_are_kept() {
        let history = vec![msg(&"a".repeat(400)), msg(&"b".repeat(40)), msg(&"c".repeat(40))];
        assert_eq!(estimate(&"b".repeat(40)), 14);
        let ids =
            |h: Vec<StoredMessage>| h.into_iter().map(|m| m.text.chars().next().unwrap_or(' ')).collect::<String>();
        assert_eq!(ids(within_tokens(history.clone(), 28)), "bc", "the 104-token oldest does not fit");
        assert_eq!(ids(within_tokens(history.clone(), 27)), "c");
        assert_eq!(ids(within_tokens(history.clone(), 5)), "c", "the newest stays whatever its size");
        assert_eq!(ids(within_tokens(history.clone(), 0)), "abc", "0: no bound");
        assert_eq!(ids(within_tokens(history, 1_000)), "abc");
    }
}
