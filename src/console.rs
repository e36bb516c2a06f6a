//! Where the library's words go. The binary owns stdout and stderr and hands them in
//! as a [`Console`]: results (tokens, JSON, config stanzas) to `out`, and notes for
//! the person at the terminal (login prompts, progress) to a [`Notice`]. The library
//! never prints by itself, so a test or another program can take its output, and a
//! reader that went away (`tunnel token | head -c1`) ends the command quietly.

use std::fmt::Display;
use std::io::{self, Write};
use std::sync::Arc;

/// Where notes for the person at the terminal go (stderr in the binary); never
/// results. Cheap to clone.
#[derive(Clone)]
pub struct Notice {
    say: Arc<dyn Fn(&str) + Send + Sync>,
    terminal: bool,
}

impl Notice {
    /// Notes go to `say`; `terminal` when a person watches it live (a spinner may
    /// be drawn there).
    pub fn new(say: impl Fn(&str) + Send + Sync + 'static, terminal: bool) -> Notice {
        Notice {
            say: Arc::new(say),
            terminal,
        }
    }

    /// Notes dropped (tests).
    pub fn none() -> Notice {
        Notice::new(|_| {}, false)
    }

    /// Tell the person `text`.
    pub fn say(&self, text: &str) {
        (self.say)(text)
    }

    /// A person watches the notes live.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notice")
    }
}

/// Writing a result failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader went away (`| head`): not a failure; the command stops quietly,
    /// as ripgrep does.
    #[error("the output was closed")]
    Closed,
    /// Any other write error.
    #[error("cannot write the output: {0}")]
    Failed(io::Error),
}

/// A command's output and notes.
pub struct Console {
    out: Box<dyn Write + Send>,
    notice: Notice,
}

impl Console {
    /// Results go to `out`; notes to `notice`.
    pub fn new(out: Box<dyn Write + Send>, notice: Notice) -> Console {
        Console { out, notice }
    }

    /// Write `bytes` as they are, and flush.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        self.out
            .write_all(bytes)
            .and_then(|()| self.out.flush())
            .map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe => OutputError::Closed,
                _ => OutputError::Failed(e),
            })
    }

    /// Write `text` and a line break.
    pub fn line(&mut self, text: impl Display) -> Result<(), OutputError> {
        self.write(format!("{text}\n").as_bytes())
    }

    /// A note for the person at the terminal.
    pub fn note(&self, text: &str) {
        self.notice.say(text)
    }

    /// Where notes go, for flows that outlive this borrow (the login flow).
    pub fn notice(&self) -> Notice {
        self.notice.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader went away.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_reader_is_told_from_a_failure() {
        let mut c = Console::new(Box::new(Closed), Notice::none());
        assert!(matches!(c.line("x"), Err(OutputError::Closed)));
        let mut c = Console::new(Box::new(io::sink()), Notice::none());
        assert!(c.line("x").is_ok());
    }
}
