//! Conversation titles, the same on every backend.

/// A conversation title from its first message (both backends title a conversation so): first line, at most
/// 60 characters, on a word boundary.
pub(crate) fn title_from(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    if line.chars().count() <= 60 {
        return line.to_string();
    }
    let cut: String = line.chars().take(60).collect();
    let trimmed = match cut.rfind(' ') {
        Some(i) if i > 20 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{}…", trimmed.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        assert_eq!(title_from("  hi there \nsecond"), "hi there");
        let long = "word ".repeat(30);
        let t = title_from(&long);
        assert!(t.chars().count() <= 61 && t.ends_with('…'), "{t}");
    }
}
