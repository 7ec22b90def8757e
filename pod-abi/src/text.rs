//! Text from a pod (guest-written files, exec-channel frames, image metadata) made safe to
//! print on the operator's terminal.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1) written as an escape: `\n`, `\r`, `\t`,
/// `\\`-prefixed hex otherwise (`\x1b`, `\u{9b}`); a backslash itself stays as is. Borrows
/// when there is nothing to escape.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Most characters [`error_line`] keeps.
pub const ERROR_LINE_CHARS: usize = 512;

/// An error text from a pod made printable: its first line (trimmed), cut to
/// [`ERROR_LINE_CHARS`] characters, control characters escaped.
pub fn error_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    let cut: String = line.chars().take(ERROR_LINE_CHARS).collect();
    escape_control(&cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(escape_control("plain"), Cow::Borrowed("plain")));
        assert_eq!(
            escape_control("a\u{1b}[2Jb\nc\td\u{9b}e\u{7f}\r"),
            "a\\x1b[2Jb\\nc\\td\\u{9b}e\\x7f\\r"
        );
        assert_eq!(
            error_line(" \u{1b}]0;x\u{7}owned\r\nsecond"),
            "\\x1b]0;x\\x07owned"
        );
        assert_eq!(error_line(&"y".repeat(600)).len(), ERROR_LINE_CHARS);
    }
}
