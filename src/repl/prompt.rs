//! The interactive prompt: line editing, history in ~/.fdbg_history, and
//! Tab completion of command names, breakpoint types, kinds and syscalls,
//! all taken from the command table so help, parsing and completion agree.
//! Also the reader of commands piped to stdin, where a line that is not
//! UTF-8 is refused alone instead of ending the session.

use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal, Write};

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::repl::command::{Operands, ReplError, Words, lookup};

/// What Tab offers for the word that ends at the cursor: (start of the
/// word, candidates). Everything comes from the command table: names,
/// each command's operands and flags, and what each flag's value can be.
pub fn completions(before_cursor: &str) -> (usize, Vec<String>) {
    let start = before_cursor
        .rfind(char::is_whitespace)
        .map_or(0, |i| i + 1);
    let word = &before_cursor[start..];
    let previous: Vec<&str> = before_cursor[..start].split_whitespace().collect();
    let options: Vec<String> = match previous.as_slice() {
        [] => Words::Commands.candidates(),
        [cmd, after @ ..] => match lookup(cmd) {
            Err(_) => vec!["--json".into()],
            Ok(spec) => {
                let value_of = after.last().and_then(|last| {
                    spec.flags
                        .iter()
                        .find(|(flag, values)| flag == last && !matches!(values, Words::Switch))
                });
                match (value_of, spec.operands) {
                    (Some((_, values)), _) => values.candidates(),
                    (None, Operands::Every(words)) => words.candidates(),
                    (None, Operands::First(words)) if after.is_empty() => words.candidates(),
                    _ => spec
                        .flags
                        .iter()
                        .map(|(flag, _)| flag.to_string())
                        .chain(["--json".to_string()])
                        .collect(),
                }
            }
        },
    };
    let mut matches: Vec<String> = options
        .into_iter()
        .filter(|o| o.starts_with(word))
        .collect();
    matches.sort();
    matches.dedup();
    (start, matches)
}

struct FdbgHelper;

impl Completer for FdbgHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(completions(&line[..pos]))
    }
}

impl Hinter for FdbgHelper {
    type Hint = String;
}
impl Highlighter for FdbgHelper {}
impl Validator for FdbgHelper {}
impl Helper for FdbgHelper {}

/// Lines from the user: typed at a terminal (with line editing, history
/// and Tab), or read from whatever else stdin is.
///
/// One read may bring several lines: a paste at the terminal (bracketed or
/// not) or type-ahead. They are queued and returned one at a time, in
/// order, so each runs as if typed alone.
pub struct Prompt {
    /// None when stdin is not a terminal (or the terminal is unusable).
    editor: Option<Editor<FdbgHelper, rustyline::history::DefaultHistory>>,
    history: Option<std::path::PathBuf>,
    /// Lines already read and not yet returned.
    pending: VecDeque<String>,
    /// stdin is a terminal: print a prompt before reading.
    show_prompt: bool,
}

impl Prompt {
    pub fn new() -> Prompt {
        let history =
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".fdbg_history"));
        let is_terminal = std::io::stdin().is_terminal();
        // Lines from a pipe or a file are read as bytes (a line that is
        // not UTF-8 is refused alone) and kept out of the history.
        let editor = is_terminal
            .then(|| Editor::new().ok())
            .flatten()
            .map(|mut e| {
                e.set_helper(Some(FdbgHelper));
                if let Some(path) = &history {
                    let _ = e.load_history(path);
                }
                e
            });
        Prompt {
            editor,
            history,
            pending: VecDeque::new(),
            show_prompt: is_terminal,
        }
    }

    /// The next line, without its newline; `None` at EOF. Ctrl-C at the
    /// prompt clears the line and asks again. A line that is not text is
    /// reported (one line on stderr) and skipped.
    pub fn read(&mut self) -> Option<String> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            match self.read_some() {
                Ok(Some(text)) => self.pending.extend(text.lines().map(str::to_string)),
                Ok(None) => return None,
                Err(e) => eprintln!("fdbg: {e}"),
            }
        }
    }

    /// Whatever one read gives: one or more lines.
    fn read_some(&mut self) -> Result<Option<String>, ReplError> {
        let Some(editor) = self.editor.as_mut() else {
            return read_plain(self.show_prompt);
        };
        loop {
            match editor.readline("(fdbg) ") {
                Ok(text) => {
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        let _ = editor.add_history_entry(line);
                    }
                    if let Some(path) = &self.history
                        && !text.trim().is_empty()
                    {
                        let _ = editor.append_history(path);
                    }
                    // A blank line is a line too (it repeats step/continue).
                    return Ok(Some(if text.is_empty() { "\n".into() } else { text }));
                }
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(ReplError::NotUtf8);
                }
                Err(_) => return Ok(None),
            }
        }
    }
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::new()
    }
}

/// One line from stdin as bytes; `Ok(None)` at EOF (or a read error).
fn read_plain(show_prompt: bool) -> Result<Option<String>, ReplError> {
    if show_prompt {
        print!("(fdbg) ");
        let _ = std::io::stdout().flush();
    }
    let mut line = Vec::new();
    match std::io::stdin().lock().read_until(b'\n', &mut line) {
        Ok(0) | Err(_) => Ok(None),
        Ok(_) => String::from_utf8(line)
            .map(Some)
            .map_err(|_| ReplError::NotUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tab_completes_commands_and_their_words() {
        assert_eq!(completions("brea"), (0, vec!["break".to_string()]));
        assert_eq!(completions("break c").1, vec!["count".to_string()]);
        assert_eq!(
            completions("catch soc").1,
            vec!["socket".to_string(), "socketpair".to_string()]
        );
        assert_eq!(completions("fds --kind ti").1, vec!["timerfd".to_string()]);
        assert_eq!(completions("info b").1, vec!["breakpoints".to_string()]);
        assert!(completions("d").1.contains(&"detach".to_string()));
        assert_eq!(
            completions("leaks ").1,
            [
                "--closed", "--folded", "--json", "--min", "--older", "--since"
            ]
            .map(String::from)
        );
        assert_eq!(
            completions("reclaim 1 --yes --f").1,
            ["--force"].map(String::from)
        );
        assert!(completions("leaks --min ").1.is_empty());
        assert_eq!(
            completions("catch socket clo").1,
            ["close", "close_range"].map(String::from)
        );
        assert_eq!(completions("help thr").1, vec!["threads".to_string()]);
        assert_eq!(completions("stats ").1, vec!["--json".to_string()]);
        assert_eq!(completions("nosuch ").1, vec!["--json".to_string()]);
    }
}
