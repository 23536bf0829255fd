//! Text a VPS chose (a command name, later a file name) on its way to a
//! log, a table or a web page: control characters are shown, not obeyed,
//! so no VPS can move a terminal's cursor, recolour it, or forge a line.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1; ESC among them) as
/// `\xNN`, and backslash as `\\` so an escape cannot be forged; borrowed
/// when there is nothing to escape.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    let special = |c: char| c.is_control() || c == '\\';
    if !text.chars().any(special) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            // Every control character is below U+00A0: two digits suffice.
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for t in ["sshd", "", "nginx: worker", "héllo wörld ✓"] {
            assert!(
                matches!(escape_control(t), Cow::Borrowed(s) if s == t),
                "{t}"
            );
        }
    }

    #[test]
    fn escapes_newlines_and_terminal_sequences() {
        assert_eq!(escape_control("\x1b[31mred\nline"), "\\x1b[31mred\\x0aline");
        assert_eq!(escape_control("a\tb\rc\0d\x7f"), "a\\x09b\\x0dc\\x00d\\x7f");
        // C1 controls: U+009B is a CSI to some terminals.
        assert_eq!(escape_control("x\u{9b}2J"), "x\\x9b2J");
    }

    #[test]
    fn a_backslash_cannot_pass_for_an_escape() {
        assert_eq!(escape_control("\\x1b"), "\\\\x1b");
        assert_ne!(escape_control("\\x1b"), escape_control("\x1b"));
    }

    #[test]
    fn the_result_holds_no_control_character() {
        let all: String = (0u32..0x250).filter_map(char::from_u32).collect();
        let escaped = escape_control(&all);
        assert!(!escaped.chars().any(char::is_control), "{escaped}");
        assert!(escaped.contains("é"), "printable text is kept");
    }
}
