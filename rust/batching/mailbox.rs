//! A completion mailbox for one event loop: worker threads push finished items and wake the
//! loop through a descriptor the loop watches (coalesced: a wake-up is written only when the
//! mailbox goes from empty to non-empty), so no thread needs the interpreter to wake an
//! asyncio loop. On Linux the descriptor is an eventfd (one counter, cheaper to signal than a
//! socket); elsewhere one end of a socket pair.

use crate::error::{CoreError, CoreResult};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

pub struct Mailbox<T> {
    items: Mutex<Vec<T>>,
    /// Written to wake the watcher.
    wake: File,
    /// Watched by the loop and drained by `take` (the same file as `wake` for an eventfd).
    watch: File,
}

#[cfg(target_os = "linux")]
fn wake_pair() -> std::io::Result<(File, File)> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd returns a new descriptor that we own from here on, or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, owned descriptor.
    let file = unsafe { File::from_raw_fd(fd) };
    Ok((file.try_clone()?, file))
}

#[cfg(not(target_os = "linux"))]
fn wake_pair() -> std::io::Result<(File, File)> {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    let (wake, watch) = UnixStream::pair()?;
    wake.set_nonblocking(true)?;
    watch.set_nonblocking(true)?;
    Ok((
        File::from(OwnedFd::from(wake)),
        File::from(OwnedFd::from(watch)),
    ))
}

impl<T> Mailbox<T> {
    pub fn new() -> CoreResult<Self> {
        let (wake, watch) = wake_pair().map_err(|e| {
            CoreError::Unavailable(format!("cannot create a wake-up descriptor: {e}"))
        })?;
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
            // A full counter or socket buffer already holds a pending wake-up, so WouldBlock
            // is fine. An eventfd takes 8-byte counter increments.
            let _ = (&self.wake).write(&1u64.to_ne_bytes());
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

    /// Wake-ups waiting on the watched descriptor (consumes them).
    fn pending(m: &Mailbox<i32>) -> usize {
        let mut buf = [0u8; 64];
        match (&m.watch).read(&mut buf) {
            Ok(8) if cfg!(target_os = "linux") => {
                u64::from_ne_bytes(buf[..8].try_into().unwrap()) as usize
            }
            Ok(n) => n / 8,
            Err(_) => 0,
        }
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
