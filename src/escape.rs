//! Escaping of text that came from the traced process (paths, socket
//! names, thread names, argument strings) before it reaches a terminal.
//!
//! It exists so that every layer that builds a line for a person (the
//! front end's reports, `inspect`, the tracer's one-line errors) escapes
//! the same way without importing the front end. A leaf: no I/O, nothing
//! of fdbg's imported.

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt::Write;

/// Replace control characters (and DEL) with visible escapes.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control()) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(escape("/tmp/a\x1b[2Jb\n"), "/tmp/a\\x1b[2Jb\\n");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn tab_return_and_del_are_escaped_and_other_text_is_kept() {
        assert_eq!(escape("a\tb\rc\x7fd"), "a\\tb\\rc\\x7fd");
        assert_eq!(escape("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
    }
}
