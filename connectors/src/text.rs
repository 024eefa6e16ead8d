//! Text as platforms take it: cut into messages no longer than a platform allows.

/// Splits `text` into pieces of at most `max_chars` characters (Unicode scalar values),
/// preferring to end a piece after a line break, else after whitespace, when one lies in
/// its second half. The pieces concatenate to `text` exactly; there is always at least
/// one (empty for an empty text).
///
/// # Panics
/// If `max_chars` is 0.
pub fn split_message(text: &str, max_chars: usize) -> Vec<&str> {
    assert!(max_chars > 0, "split_message: max_chars must be positive");
    let mut pieces = Vec::new();
    let mut rest = text;
    // The byte offset just past the first `max_chars` characters, while more remain.
    while let Some((limit, _)) = rest.char_indices().nth(max_chars) {
        let window = &rest[..limit];
        let after = |(at, c): (usize, char)| at + c.len_utf8();
        let break_at = window
            .char_indices()
            .rev()
            .find(|&(_, c)| c == '\n')
            .map(after)
            .filter(|&at| at > limit / 2)
            .or_else(|| {
                window
                    .char_indices()
                    .rev()
                    .find(|&(_, c)| c.is_whitespace())
                    .map(after)
                    .filter(|&at| at > limit / 2)
            })
            .unwrap_or(limit);
        pieces.push(&rest[..break_at]);
        rest = &rest[break_at..];
    }
    pieces.push(rest);
    pieces
}
