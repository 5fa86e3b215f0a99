//! The rings a bridge reads from ([`Source`]) and writes into ([`Sink`]): every
//! flavour's consumer and producer, typed or stream.

use std::thread;
use std::time::{Duration, Instant};

use shm_ring::{Message, broadcast, mpmc, spsc, stream};

use super::Error;
use super::wire::Identity;

/// A local ring read by an outbound bridge ([`Out`](super::Out)).
pub trait Source {
    /// What the ring carries.
    fn identity(&self) -> Identity;

    /// The stream this source's sequence numbers count in, if they are the ring's own
    /// positions, the same for every bridge that reads the ring (a restarted bridge goes
    /// on where the killed one stopped); `None`: the bridge numbers the messages itself,
    /// in a stream of its own.
    fn stream(&self) -> Option<u64> {
        None
    }

    /// The ring position of the oldest message not released, for a source whose
    /// messages stay in the ring until [`release`](Self::release) (then the bridge
    /// releases them once acknowledged); `None` for a source that copies them out.
    fn position(&self) -> Option<u64> {
        None
    }

    /// Waits up to `timeout` for a message past the first `skip` unreleased ones (those
    /// published and not yet acknowledged; 0 for a source without positions), then
    /// appends up to `max` of those waiting to `out` (their bytes; a frame as its `u32`
    /// length and bytes). Returns how many (0: the time passed, or the ring's producers
    /// are gone and nothing more is in it).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] for a corrupt ring.
    fn peek(
        &mut self,
        out: &mut Vec<u8>,
        skip: u32,
        max: usize,
        timeout: Duration,
    ) -> Result<Peeked, Error>;

    /// Releases the `n` oldest unreleased messages. A source that copies messages out
    /// released them already.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] for a corrupt ring.
    fn release(&mut self, _n: u32) -> Result<(), Error> {
        Ok(())
    }
}

/// What a [`Source::peek`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peeked {
    /// Messages appended.
    pub count: u32,
    /// Messages the ring lost before this reader read them (a broadcast subscriber that
    /// lagged).
    pub lost: u64,
}

/// What a [`Sink::push`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written into the ring.
    Written,
    /// Not written: the ring is full (past the wait, if one was given).
    Full,
    /// Not written: nobody consumes the ring now (answered at once).
    Gone,
    /// Not written, and never will be: the message does not fit the ring.
    Unfit,
}

/// A local ring written by an inbound bridge ([`In`](super::In)).
pub trait Sink {
    /// What the ring carries.
    fn identity(&self) -> Identity;

    /// Writes one message (its bytes, as [`wire::split`](super::wire::split) gave them),
    /// waiting up to `wait` for room (`None`: not at all).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] for a corrupt ring.
    fn push(&mut self, message: &[u8], wait: Option<Duration>) -> Result<Pushed, Error>;
}

/// A ring whose producers are gone and which is empty: wait a little before the next
/// look (a producer may attach again), rather than spin.
fn idle(timeout: Duration) {
    thread::sleep(timeout.min(Duration::from_millis(10)));
}

/// A copying source's first receive, waited for: the message, or none (the time passed,
/// or the ring's producers are gone: after a pause).
fn waited<T>(
    got: Result<T, shm_ring::RecvTimeoutError>,
    timeout: Duration,
) -> Result<Option<T>, Error> {
    match got {
        Ok(value) => Ok(Some(value)),
        Err(shm_ring::RecvTimeoutError::Timeout) => Ok(None),
        Err(shm_ring::RecvTimeoutError::Disconnected) => {
            idle(timeout);
            Ok(None)
        }
        Err(shm_ring::RecvTimeoutError::Corrupted(c)) => Err(Error::Corrupted(c)),
    }
}

/// A copying source's next receive, not waited for: the message, or none.
fn more<T>(got: Result<T, shm_ring::TryRecvError>) -> Result<Option<T>, Error> {
    match got {
        Ok(value) => Ok(Some(value)),
        Err(shm_ring::TryRecvError::Corrupted(c)) => Err(Error::Corrupted(c)),
        Err(_) => Ok(None),
    }
}

fn typed<T: Message>(message: &[u8]) -> Result<T, Error> {
    T::read_from_bytes(message).map_err(|_| Error::Size {
        expected: size_of::<T>(),
        found: message.len(),
    })
}

impl<T: Message> Source for spsc::Consumer<T> {
    fn identity(&self) -> Identity {
        Identity::of::<T>()
    }

    fn stream(&self) -> Option<u64> {
        Some(self.ring_id())
    }

    fn position(&self) -> Option<u64> {
        Some(spsc::Consumer::position(self))
    }

    fn peek(
        &mut self,
        out: &mut Vec<u8>,
        skip: u32,
        max: usize,
        timeout: Duration,
    ) -> Result<Peeked, Error> {
        let skip = skip as usize;
        let wanted = skip.saturating_add(max);
        let chunk = if skip == 0 {
            self.read_chunk_deadline(wanted, Instant::now().checked_add(timeout))
        } else {
            // The first `skip` are there already: look, and wait a little if there is
            // nothing past them.
            self.read_chunk(wanted).map_err(|e| match e {
                shm_ring::TryRecvError::Empty => shm_ring::RecvTimeoutError::Timeout,
                shm_ring::TryRecvError::Disconnected => shm_ring::RecvTimeoutError::Disconnected,
                shm_ring::TryRecvError::Corrupted(c) => shm_ring::RecvTimeoutError::Corrupted(c),
            })
        };
        let Some(chunk) = waited(chunk, timeout)? else {
            return Ok(Peeked::default());
        };
        let (a, b) = chunk.as_slices();
        let mut count = 0;
        for message in a.iter().chain(b).skip(skip) {
            out.extend_from_slice(message.as_bytes());
            count += 1;
        }
        // Dropped without commit: released only once acknowledged.
        drop(chunk);
        if count == 0 {
            thread::sleep(timeout);
        }
        Ok(Peeked { count, lost: 0 })
    }

    fn release(&mut self, n: u32) -> Result<(), Error> {
        let chunk = self.read_chunk(n as usize).map_err(|e| match e {
            shm_ring::TryRecvError::Corrupted(c) => Error::Corrupted(c),
            other => Error::Released(other.to_string()),
        })?;
        chunk.commit(n as usize);
        Ok(())
    }
}

impl<T: Message> Source for mpmc::Consumer<T> {
    fn identity(&self) -> Identity {
        Identity::of::<T>()
    }

    fn peek(
        &mut self,
        out: &mut Vec<u8>,
        _skip: u32,
        max: usize,
        timeout: Duration,
    ) -> Result<Peeked, Error> {
        let Some(first) = waited(self.recv_timeout(timeout), timeout)? else {
            return Ok(Peeked::default());
        };
        out.extend_from_slice(first.as_bytes());
        let mut count = 1;
        while count < max {
            let Some(value) = more(self.try_recv())? else {
                break;
            };
            out.extend_from_slice(value.as_bytes());
            count += 1;
        }
        Ok(Peeked {
            count: count as u32,
            lost: 0,
        })
    }
}

impl<T: Message> Source for broadcast::Subscriber<T> {
    fn identity(&self) -> Identity {
        Identity::of::<T>()
    }

    fn peek(
        &mut self,
        out: &mut Vec<u8>,
        _skip: u32,
        max: usize,
        timeout: Duration,
    ) -> Result<Peeked, Error> {
        use broadcast::{RecvTimeoutError as Wait, TryRecvError as Try};
        let mut peeked = Peeked::default();
        let deadline = Instant::now().checked_add(timeout);
        // The first message, waited for; a lag is counted and the wait goes on.
        loop {
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            match self.recv_timeout(left) {
                Ok(value) => {
                    out.extend_from_slice(value.as_bytes());
                    peeked.count = 1;
                    break;
                }
                Err(Wait::Lagged { missed }) => peeked.lost += missed,
                Err(Wait::Untethered) => {}
                Err(Wait::Timeout) => return Ok(peeked),
                Err(Wait::Disconnected) => {
                    idle(timeout);
                    return Ok(peeked);
                }
                Err(Wait::Corrupted(c)) => return Err(Error::Corrupted(c)),
            }
        }
        while (peeked.count as usize) < max {
            match self.try_recv() {
                Ok(value) => {
                    out.extend_from_slice(value.as_bytes());
                    peeked.count += 1;
                }
                Err(Try::Lagged { missed }) => peeked.lost += missed,
                Err(Try::Corrupted(c)) => return Err(Error::Corrupted(c)),
                Err(_) => break,
            }
        }
        Ok(peeked)
    }
}

impl Source for stream::Consumer {
    fn identity(&self) -> Identity {
        Identity::frames()
    }

    fn peek(
        &mut self,
        out: &mut Vec<u8>,
        _skip: u32,
        max: usize,
        timeout: Duration,
    ) -> Result<Peeked, Error> {
        let frame = |out: &mut Vec<u8>, payload: &[u8]| {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(payload);
        };
        let Some(first) = waited(self.recv_timeout(timeout), timeout)? else {
            return Ok(Peeked::default());
        };
        frame(out, &first);
        drop(first);
        let mut count = 1;
        while count < max {
            let Some(payload) = more(self.try_recv())? else {
                break;
            };
            frame(out, &payload);
            count += 1;
        }
        Ok(Peeked {
            count: count as u32,
            lost: 0,
        })
    }
}

/// `Sink` for a typed flavour's producer: `send_timeout` when waiting, `try_send`
/// otherwise.
macro_rules! typed_sink {
    ($producer:ty) => {
        impl<T: Message> Sink for $producer {
            fn identity(&self) -> Identity {
                Identity::of::<T>()
            }

            fn push(&mut self, message: &[u8], wait: Option<Duration>) -> Result<Pushed, Error> {
                let value = typed::<T>(message)?;
                match wait {
                    Some(wait) => outcome(self.send_timeout(value, wait), timed_out),
                    None => outcome(self.try_send(value), refused),
                }
            }
        }
    };
}

typed_sink!(spsc::Producer<T>);
typed_sink!(mpmc::Producer<T>);
typed_sink!(broadcast::Publisher<T>);

fn outcome<E>(
    sent: Result<(), E>,
    why: impl FnOnce(E) -> Result<Pushed, Error>,
) -> Result<Pushed, Error> {
    sent.map_or_else(why, |()| Ok(Pushed::Written))
}

fn timed_out<T>(e: shm_ring::SendTimeoutError<T>) -> Result<Pushed, Error> {
    match e {
        shm_ring::SendTimeoutError::Timeout(_) => Ok(Pushed::Full),
        shm_ring::SendTimeoutError::Disconnected(_) => Ok(Pushed::Gone),
        shm_ring::SendTimeoutError::Corrupted(_, c) => Err(Error::Corrupted(c)),
    }
}

fn refused<T>(e: shm_ring::TrySendError<T>) -> Result<Pushed, Error> {
    match e {
        shm_ring::TrySendError::Full(_) => Ok(Pushed::Full),
        shm_ring::TrySendError::Disconnected(_) => Ok(Pushed::Gone),
        shm_ring::TrySendError::Corrupted(_, c) => Err(Error::Corrupted(c)),
    }
}

impl Sink for stream::Producer {
    fn identity(&self) -> Identity {
        Identity::frames()
    }

    fn push(&mut self, message: &[u8], wait: Option<Duration>) -> Result<Pushed, Error> {
        let sent = match wait {
            Some(wait) => self.send_timeout(message, wait),
            None => self.try_send(message),
        };
        match sent {
            Ok(()) => Ok(Pushed::Written),
            Err(stream::SendError::Full | stream::SendError::Timeout) => Ok(Pushed::Full),
            Err(stream::SendError::Disconnected) => Ok(Pushed::Gone),
            Err(stream::SendError::TooLarge { .. }) => Ok(Pushed::Unfit),
            Err(stream::SendError::Corrupted(c)) => Err(Error::Corrupted(c)),
        }
    }
}
