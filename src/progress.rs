//! How long work tells how far it is: one observer, handed to whatever runs long (evaluation,
//! training, caching, poisoning). On a terminal it draws bars; off one (a log file, a notebook
//! cell), where bars are not drawn, it writes a line per step; silent, it says nothing (`--json`).

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Shown,
    Silent,
}

impl Progress {
    pub fn shown(show: bool) -> Self {
        if show {
            Self::Shown
        } else {
            Self::Silent
        }
    }

    pub fn is_shown(self) -> bool {
        self == Self::Shown
    }

    /// A bar that counts `unit` (images, epochs, steps); `what` labels it and the message (set
    /// with `set_message`, e.g. the loss) follows it. Hidden when silent or off a terminal
    /// (indicatif draws nothing there; [`Self::line`] says what is happening instead).
    pub fn counter(self, len: usize, what: &str, unit: &str) -> ProgressBar {
        if !self.is_shown() {
            return ProgressBar::hidden();
        }
        self.line(|| format!("{what}: {len} {unit}"));
        let bar = ProgressBar::new(len as u64);
        if let Ok(style) = ProgressStyle::with_template(&format!(
            "{{prefix:>12}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, eta {{eta}}  {{msg}}"
        )) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what.to_string());
        bar
    }

    /// A bar over `len` images.
    pub fn images(self, len: usize, what: &str) -> ProgressBar {
        self.counter(len, what, "images")
    }

    /// One line on stderr where bars are not drawn (stderr is not a terminal): long jobs are
    /// not silent in a log.
    pub fn line(self, line: impl FnOnce() -> String) {
        use std::io::IsTerminal;
        if self.is_shown() && !std::io::stderr().is_terminal() {
            eprintln!("{}", line());
        }
    }

    /// A line worth saying on a terminal too (resuming, reusing, a fallback taken).
    pub fn note(self, line: impl FnOnce() -> String) {
        if self.is_shown() {
            eprintln!("{}", line());
        }
    }
}
