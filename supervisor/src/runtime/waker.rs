//! The one wake-up mechanism: a nonblocking socketpair whose read end the event loop polls
//! with everything else, and whose write end another thread (or signal-hook, in signal
//! context) writes a byte to. Used by the signals, thread mode, the input reader thread and
//! the channel source.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Makes a connected pair: poll the [`Wakeup`], call [`Waker::wake`] from anywhere.
pub fn wake_pair() -> io::Result<(Wakeup, Waker)> {
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    // Nonblocking, so that a waker never blocks when the reader is behind: a full socket
    // already holds a wake-up, and one byte or many mean the same.
    write.set_nonblocking(true)?;
    Ok((Wakeup(read), Waker(write)))
}

/// The end to poll: readable when someone has woken it since the last [`Wakeup::drain`].
#[derive(Debug)]
pub struct Wakeup(UnixStream);

impl Wakeup {
    /// Empties it; returns how many wake-ups it held. Call it before looking at what the
    /// wakers announced: a wake-up after this leaves its byte for the next poll.
    pub fn drain(&self) -> usize {
        let mut buf = [0u8; 256];
        let mut n = 0;
        while let Ok(k) = (&self.0).read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    }
}

impl AsFd for Wakeup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Wakeup {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The end to write to.
#[derive(Debug)]
pub(crate) struct Waker(UnixStream);

impl Waker {
    /// Makes the [`Wakeup`] readable. A failure is ignored: it is a full socket (the reader
    /// has wake-ups pending already) or a reader that is gone (nobody to wake).
    pub fn wake(&self) {
        let _ = (&self.0).write(&[1]);
    }
}

/// For signal-hook, which writes to the descriptor itself.
impl From<Waker> for OwnedFd {
    fn from(w: Waker) -> OwnedFd {
        w.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_is_drained_once() {
        let (wakeup, waker) = wake_pair().unwrap();
        assert_eq!(wakeup.drain(), 0);
        waker.wake();
        waker.wake();
        assert_eq!(wakeup.drain(), 2);
        assert_eq!(wakeup.drain(), 0);
        drop(wakeup);
        waker.wake(); // nobody to wake: no error, no signal
    }
}
