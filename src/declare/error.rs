//! Where a declaration came from and what is wrong with a bad file. A leaf: the parser in
//! `mod.rs` and the file system part in `read.rs` both report through it.

use std::fmt;

/// Where a declaration was written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// The file.
    pub file: String,
    /// The line (1-based) of the section header, or of the key an error is about.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: the file or directory as a whole.
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// A bad file: `FILE:LINE: sentence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclError {
    /// Where.
    pub origin: Origin,
    /// What is wrong, one sentence.
    pub message: String,
}

impl std::fmt::Display for DeclError {
    /// One line of visible text: the sentence quotes the file's values and its name, in which a
    /// control character (an escape sequence, a newline) is shown escaped, never sent to the
    /// terminal or the journal as such (found by the `dropin` fuzz target).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = format!("{}: {}", self.origin, self.message);
        f.write_str(&crate::names::visible(&whole))
    }
}

impl std::error::Error for DeclError {}

/// A [`DeclError`] at `file:line`.
pub(super) fn err(file: &str, line: usize, message: impl Into<String>) -> DeclError {
    DeclError {
        origin: Origin {
            file: file.to_string(),
            line,
        },
        message: message.into(),
    }
}
