//! An error printed with its chain of causes, `a: b: c`, one way for the worker's last words
//! and the supervisor's error messages.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its causes, separated by `: `.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a dyn Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to read the tasks")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_follows_after_a_colon() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(ErrorChain(&e).to_string(), "failed to read the tasks: disk on fire");
        assert_eq!(ErrorChain(&std::io::Error::other("alone")).to_string(), "alone");
    }
}
