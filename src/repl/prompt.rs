//! The interactive prompt: line editing, history in ~/.fdbg_history, and
//! Tab completion of command names, breakpoint types, kinds and syscalls,
//! all taken from the command table so help, parsing and completion agree.

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::fdtable::FdKind;
use crate::repl::command::COMMANDS;

/// What Tab offers for the word that ends at the cursor: (start of the
/// word, candidates).
pub fn completions(before_cursor: &str) -> (usize, Vec<String>) {
    let start = before_cursor
        .rfind(char::is_whitespace)
        .map_or(0, |i| i + 1);
    let word = &before_cursor[start..];
    let previous: Vec<&str> = before_cursor[..start].split_whitespace().collect();
    let kinds = || FdKind::ALL.iter().map(|k| k.as_str().to_string());
    let syscalls = || {
        crate::syscalls::traced_syscalls()
            .iter()
            .filter_map(|&nr| crate::syscalls::syscall_name(nr))
            .map(str::to_string)
    };
    let options: Vec<String> = match previous.as_slice() {
        [] => COMMANDS.iter().map(|c| c.name.to_string()).collect(),
        [cmd, ..] => match crate::repl::command::lookup(cmd).map(|s| s.name) {
            Ok("break") if previous.len() == 1 => {
                ["fd", "count", "site"].map(String::from).to_vec()
            }
            Ok("catch") => kinds().chain(syscalls()).collect(),
            Ok("info") if previous.len() == 1 => vec!["breakpoints".into()],
            Ok("help") if previous.len() == 1 => {
                COMMANDS.iter().map(|c| c.name.to_string()).collect()
            }
            Ok("fds") if previous.last() == Some(&"--kind") => kinds().collect(),
            Ok("fds") => vec!["--kind".into(), "--json".into()],
            Ok("leaks") => vec!["--since".into(), "--min".into(), "--json".into()],
            _ => vec!["--json".into()],
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

/// One line from the user: `Some(line)`, or `None` at EOF.
pub struct Prompt {
    editor: Option<Editor<FdbgHelper, rustyline::history::DefaultHistory>>,
    history: Option<std::path::PathBuf>,
}

impl Prompt {
    pub fn new() -> Prompt {
        let history =
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".fdbg_history"));
        let editor = Editor::new().ok().map(|mut e| {
            e.set_helper(Some(FdbgHelper));
            if let Some(path) = &history {
                let _ = e.load_history(path);
            }
            e
        });
        Prompt { editor, history }
    }

    /// Read one line; Ctrl-C at the prompt clears the line and asks again.
    pub fn read(&mut self) -> Option<String> {
        let Some(editor) = self.editor.as_mut() else {
            return read_plain();
        };
        loop {
            match editor.readline("(fdbg) ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                        if let Some(path) = &self.history {
                            let _ = editor.append_history(path);
                        }
                    }
                    return Some(line);
                }
                Err(ReadlineError::Interrupted) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::new()
    }
}

fn read_plain() -> Option<String> {
    use std::io::{BufRead, Write};
    print!("(fdbg) ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
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
    }
}
