//! A completion mailbox for one event loop: worker threads push finished items and wake the
//! loop by writing one byte to a socket the loop watches (coalesced: a byte is written only
//! when the mailbox goes from empty to non-empty), so no thread needs the interpreter to wake
//! an asyncio loop.

use crate::error::{CoreError, CoreResult};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

pub struct Mailbox<T> {
    items: Mutex<Vec<T>>,
    wake: UnixStream,
    watch: UnixStream,
}

impl<T> Mailbox<T> {
    pub fn new() -> CoreResult<Self> {
        let io = |e: std::io::Error| {
            CoreError::Unavailable(format!("cannot create a wake-up socket: {e}"))
        };
        let (wake, watch) = UnixStream::pair().map_err(io)?;
        wake.set_nonblocking(true).map_err(io)?;
        watch.set_nonblocking(true).map_err(io)?;
        Ok(Mailbox {
            items: Mutex::new(Vec::new()),
            wake,
            watch,
        })
    }

    /// The descriptor that becomes readable when items arrive.
    pub fn fd(&self) -> RawFd {
        self.watch.as_raw_fd()
    }

    /// Add items and wake the watcher if the mailbox was empty.
    pub fn push_all(&self, batch: impl IntoIterator<Item = T>) {
        let was_empty = {
            let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = items.is_empty();
            items.extend(batch);
            was_empty
        };
        if was_empty {
            // A full socket buffer already holds a pending wake-up, so WouldBlock is fine.
            let _ = (&self.wake).write(&[1]);
        }
    }

    /// Consume pending wake-ups, then take every item. Reading before taking means an item
    /// pushed in between is either taken now or followed by a fresh wake-up.
    pub fn take(&self) -> Vec<T> {
        let mut buf = [0u8; 64];
        loop {
            match (&self.watch).read(&mut buf) {
                Ok(n) if n == buf.len() => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                _ => break,
            }
        }
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes waiting on the watched socket (consumes them).
    fn pending(m: &Mailbox<i32>) -> usize {
        let mut buf = [0u8; 16];
        (&m.watch).read(&mut buf).unwrap_or(0)
    }

    #[test]
    fn wakes_once_per_empty_to_full_transition() {
        let m = Mailbox::new().unwrap();
        assert_eq!(pending(&m), 0);
        m.push_all([1, 2]);
        m.push_all([3]);
        assert_eq!(pending(&m), 1, "the second push must not write again");
        assert_eq!(m.take(), vec![1, 2, 3]);
        assert!(m.take().is_empty());
        m.push_all([4]);
        assert_eq!(m.take(), vec![4], "take consumes the wake-up byte");
        assert_eq!(pending(&m), 0);
    }
}
