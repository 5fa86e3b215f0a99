//! Async receivers and senders: [`Async`] wraps any [`Waitable`] handle and makes it
//! awaitable from any executor (tokio, async-std, smol, `futures::executor`): the
//! `futures` traits only, no runtime dependency.
//!
//! # How a task is woken
//!
//! A future that finds its handle not ready spins for a short while
//! ([`Async::DEFAULT_SPIN`]), then does what a blocking waiter does before it sleeps:
//! it announces itself on the handle's event count and re-checks (the protocol of
//! `shm_sync::EventCount`), and instead of sleeping it hands the event count's futex
//! word and the value it must keep, with the task's waker, to the process's reactor:
//! one thread, started at the first registration, that sleeps in one `futex_waitv`
//! (Linux 5.16) over every registered word, plus a doorbell word of its own that new
//! registrations ring. When a producer (of any process) notifies that event count, the
//! word moves, the reactor wakes, and wakes every task whose word moved. A task that
//! is polled again (woken or not) withdraws its announcement first, so a waker is
//! never left registered by a finished or dropped future.
//!
//! This is the design of an epoll reactor (tokio's, `async-io`'s) with `futex_waitv` in
//! place of `epoll_wait`: the kernel object a ring's producer already pokes when a
//! consumer sleeps is what the reactor sleeps on, so an async consumer costs its
//! producers nothing more than a parked thread does.
//!
//! A registration keeps its ring's memory mapped while the reactor may read the word,
//! so a handle dropped (or a future forgotten) mid-wait is never read after unmap. A
//! task waiting on a ring in a segment is also woken every
//! [`LIVENESS_PERIOD`](crate::spsc::LIVENESS_PERIOD) to probe its peers, as a blocked
//! thread is. More than 127 distinct words at once: the rest are checked every
//! millisecond. On a kernel without `futex_waitv`, the reactor checks every word every
//! millisecond.
//!
//! # Cancellation
//!
//! Every future here is cancellation safe: dropped before it completes, [`Async::recv`]
//! has received nothing (a message is taken only in the poll that returns it) and
//! [`Async::send`] has sent nothing (its value is dropped with it);
//! [`Async::ready`] changes nothing.
//!
//! # Examples
//!
//! ```
//! use shm_ring::{spsc, Async};
//!
//! let (tx, rx) = spsc::channel::<u64>(64)?;
//! let (mut tx, mut rx) = (Async::new(tx), Async::new(rx));
//! let consumer = std::thread::spawn(move || {
//!     pollster::block_on(async {
//!         let mut sum = 0;
//!         while let Ok(v) = rx.recv().await {
//!             sum += v;
//!         }
//!         sum
//!     })
//! });
//! pollster::block_on(async {
//!     for v in 1..=1000 {
//!         tx.send(v).await.unwrap();
//!     }
//! });
//! drop(tx);
//! assert_eq!(consumer.join().unwrap(), 500_500);
//! # Ok::<(), shm_ring::Error>(())
//! ```

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use shm_sync::atomic::{AtomicU32, Ordering, spin_loop};
use shm_sync::futex::{self, WAIT_ANY_MAX, WaitAnyError};
use shm_sync::wait::SPINS_PER_CLOCK_READ;

use crate::core::blocking::{earliest, slice_deadline};
use crate::error::{RecvError, SendError, TryRecvError, TrySendError};
use crate::message::Message;
use crate::wait_set::Waitable;
use crate::wait_set::sealed::KeepAlive;
use crate::{broadcast, mpmc, spsc, stream};

/// A handle made awaitable: `recv().await`, `send(v).await`, `ready().await`, and a
/// [`futures_core::Stream`] of messages for a typed consumer. See the [module
/// docs](self).
///
/// `Async<H>` is `Unpin` and `Send` when `H` is; it holds at most one registration
/// with the reactor, withdrawn at the next poll, when the future that made it ends or
/// is dropped, or when the `Async` is dropped.
#[derive(Debug)]
pub struct Async<H: Waitable> {
    handle: H,
    /// The id of this handle's registration with the reactor, while it has one.
    registered: Option<u64>,
    /// When the next liveness probe is due, while waiting on a ring whose peers may die.
    probe_at: Option<Instant>,
    spin: Duration,
}

impl<H: Waitable> Async<H> {
    /// How long a future polls its handle before it registers with the reactor: 10 us.
    /// Spinning in a poll holds the executor's thread, so this is shorter than a
    /// blocking waiter's default (30 us): a message that arrives within it costs no
    /// wake-up of the reactor or the task.
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(10);

    /// Wraps `handle`, with the default spin.
    pub fn new(handle: H) -> Self {
        Self::with_spin(handle, Self::DEFAULT_SPIN)
    }

    /// Wraps `handle`; its futures poll it for `spin` before they register with the
    /// reactor (`Duration::ZERO`: at once).
    pub fn with_spin(handle: H, spin: Duration) -> Self {
        Async {
            handle,
            registered: None,
            probe_at: None,
            spin,
        }
    }

    /// The handle, for its non-blocking calls (any registration withdrawn first, so that
    /// a blocking call of the handle cannot meet this one's announcement).
    pub fn get_mut(&mut self) -> &mut H {
        self.withdraw();
        &mut self.handle
    }

    /// The handle.
    pub fn get_ref(&self) -> &H {
        &self.handle
    }

    /// The handle back, any registration withdrawn.
    pub fn into_inner(mut self) -> H {
        self.withdraw();
        // SAFETY: `self` is forgotten right after: its `handle` is read once and its
        // `Drop` (which would withdraw again and drop the handle) never runs.
        let handle = unsafe { std::ptr::read(&self.handle) };
        std::mem::forget(self);
        handle
    }

    /// Waits until the handle is [ready](Waitable::ready): a message to receive, room to
    /// send, a request, a response. Then make the handle's non-blocking call
    /// ([`get_mut`](Self::get_mut)); where several consumers share a ring it may still
    /// find nothing (another took it), and the caller awaits again.
    ///
    /// Cancellation safe: it takes and sends nothing.
    pub async fn ready(&mut self) {
        let this = Withdraw(self);
        poll_fn(|cx| this.0.poll_ready(cx)).await;
    }

    /// [`ready`](Self::ready) as a poll: `Ready` when the handle is ready; `Pending`
    /// with the task registered to be woken when it may be.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_until(cx, &mut |handle, probe| handle.ready(probe))
    }

    /// [`poll_ready`](Self::poll_ready) for a readiness of the caller's: `ready(handle,
    /// probe)` (more room than one slot, say), which whoever makes it true notifies the
    /// handle's wake event after, as for [`Waitable::ready`].
    fn poll_until(
        &mut self,
        cx: &mut Context<'_>,
        ready: &mut impl FnMut(&mut H, bool) -> bool,
    ) -> Poll<()> {
        self.withdraw();
        let probe = self.probe_at.is_some_and(|at| Instant::now() >= at);
        if probe {
            self.probe_at = None;
        }
        if ready(&mut self.handle, probe) {
            return Poll::Ready(());
        }
        if !self.spin.is_zero() && self.spin_until(ready) {
            return Poll::Ready(());
        }
        let key = self.handle.wake_event().prepare();
        if ready(&mut self.handle, false) {
            self.cancel();
            return Poll::Ready(());
        }
        let wake = self.handle.wake_event();
        let (word, value) = wake.event.sleep_word(key);
        let probe_at = slice_deadline(None, self.handle.peers_may_die());
        self.probe_at = probe_at;
        let until = key.sleep_until(probe_at);
        let id = reactor().register(Entry {
            word: core::ptr::from_ref(word),
            value,
            until,
            waker: cx.waker().clone(),
            fired: false,
            _keep: Arc::new(self.handle.keep_alive()),
        });
        self.registered = Some(id);
        Poll::Pending
    }

    /// Polls the handle for the spin budget; whether it became ready.
    fn spin_until(&mut self, ready: &mut impl FnMut(&mut H, bool) -> bool) -> bool {
        let end = Instant::now() + self.spin;
        let mut spins = 0u32;
        loop {
            spin_loop();
            if ready(&mut self.handle, false) {
                return true;
            }
            spins = spins.wrapping_add(1);
            if spins % SPINS_PER_CLOCK_READ == 0 && Instant::now() >= end {
                return false;
            }
        }
    }

    /// Withdraws this handle's registration and its announcement, if it has one.
    fn withdraw(&mut self) {
        if let Some(id) = self.registered.take() {
            reactor().remove(id);
            self.cancel();
        }
    }

    /// Withdraws the announcement on the handle's event count.
    fn cancel(&self) {
        self.handle.wake_event().cancel();
    }
}

/// Withdraws the registration of a future of an [`Async`] when the future ends or is
/// dropped, so that a cancelled wait leaves no waiter announced (which would cost every
/// notification of the ring a wake-up syscall until the next poll).
struct Withdraw<'a, H: Waitable>(&'a mut Async<H>);

impl<H: Waitable> Drop for Withdraw<'_, H> {
    fn drop(&mut self) {
        self.0.withdraw();
    }
}

impl<H: Waitable> Drop for Async<H> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// A typed consumer an [`Async`] receives from: [`spsc::Consumer`], [`mpmc::Consumer`],
/// [`broadcast::Subscriber`]. Sealed.
pub trait AsyncRecv: Waitable {
    /// The message type.
    type Item;
    /// The error of a receive: the blocking `recv`'s.
    type Error;
    /// One non-blocking receive: `Ok(None)` when there is nothing now.
    ///
    /// # Errors
    ///
    /// The handle's: disconnected, lagged (broadcast), corrupted.
    fn try_next(&mut self) -> Result<Option<Self::Item>, Self::Error>;
    /// Whether `error` ends a stream of messages (the producers are gone).
    fn ends(error: &Self::Error) -> bool;
}

/// Maps a `try_recv` of the SPSC and MPMC consumers.
fn next_of<T>(got: Result<T, TryRecvError>) -> Result<Option<T>, RecvError> {
    match got {
        Ok(v) => Ok(Some(v)),
        Err(TryRecvError::Empty) => Ok(None),
        Err(TryRecvError::Disconnected) => Err(RecvError::Disconnected),
        Err(TryRecvError::Corrupted(c)) => Err(RecvError::Corrupted(c)),
    }
}

/// `AsyncRecv` for a consumer whose `try_recv` gives the shared `TryRecvError`.
macro_rules! async_recv {
    ($($ty:ident)::+) => {
        impl<T: Message + 'static> AsyncRecv for $($ty)::+<T> {
            type Item = T;
            type Error = RecvError;
            fn try_next(&mut self) -> Result<Option<T>, RecvError> {
                next_of(self.try_recv())
            }
            fn ends(error: &RecvError) -> bool {
                *error == RecvError::Disconnected
            }
        }
    };
}
async_recv!(spsc::Consumer);
async_recv!(mpmc::Consumer);

impl<T: Message + 'static> AsyncRecv for broadcast::Subscriber<T> {
    type Item = T;
    type Error = broadcast::RecvError;
    fn try_next(&mut self) -> Result<Option<T>, broadcast::RecvError> {
        use broadcast::{RecvError as E, TryRecvError as T};
        match self.try_recv() {
            Ok(v) => Ok(Some(v)),
            Err(T::Empty) => Ok(None),
            Err(T::Lagged { missed }) => Err(E::Lagged { missed }),
            Err(T::Untethered) => Err(E::Untethered),
            Err(T::Disconnected) => Err(E::Disconnected),
            Err(T::Corrupted(c)) => Err(E::Corrupted(c)),
        }
    }
    fn ends(error: &broadcast::RecvError) -> bool {
        *error == broadcast::RecvError::Disconnected
    }
}

/// A typed producer an [`Async`] sends through: [`spsc::Producer`],
/// [`mpmc::Producer`], [`broadcast::Publisher`]. Sealed.
pub trait AsyncSend: Waitable {
    /// The message type.
    type Item;
    /// One non-blocking send.
    ///
    /// # Errors
    ///
    /// The handle's `try_send`'s, with the value back.
    fn try_put(&mut self, value: Self::Item) -> Result<(), TrySendError<Self::Item>>;
}

macro_rules! async_send {
    ($($ty:ident)::+) => {
        impl<T: Message + 'static> AsyncSend for $($ty)::+<T> {
            type Item = T;
            fn try_put(&mut self, value: T) -> Result<(), TrySendError<T>> {
                self.try_send(value)
            }
        }
    };
}
async_send!(spsc::Producer);
async_send!(mpmc::Producer);
async_send!(broadcast::Publisher);

impl<H: AsyncRecv> Async<H> {
    /// Receives the next message, awaiting one while there is none.
    ///
    /// Cancellation safe: a message is taken only by the poll that returns it.
    ///
    /// # Errors
    ///
    /// The handle's blocking `recv`'s: disconnected once every message is received and
    /// the producers are gone (a dead one seen within the liveness period), lagged
    /// (broadcast), corrupted.
    pub async fn recv(&mut self) -> Result<H::Item, H::Error> {
        let this = Withdraw(self);
        poll_fn(|cx| this.0.poll_recv(cx)).await
    }

    /// [`recv`](Self::recv) as a poll.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<H::Item, H::Error>> {
        // A registration of the last poll ends here, message or not: left counted, it
        // would cost every notification of the ring a wake-up syscall.
        self.withdraw();
        loop {
            match self.handle.try_next() {
                Ok(Some(value)) => return Poll::Ready(Ok(value)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.poll_ready(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<H: AsyncRecv + Unpin> futures_core::Stream for Async<H> {
    /// A message, or an error other than the end (lagged, corrupted).
    type Item = Result<H::Item, H::Error>;

    /// The messages, in order, until the producers are gone (`None`).
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_recv(cx) {
            Poll::Ready(Err(e)) if H::ends(&e) => Poll::Ready(None),
            Poll::Ready(got) => Poll::Ready(Some(got)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<H: AsyncSend> Async<H> {
    /// Sends `value`, awaiting room while the ring is full.
    ///
    /// Cancellation safe: dropped before it completes, it has sent nothing (the value is
    /// dropped with it).
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] when the consumers are gone, [`SendError::Corrupted`];
    /// the value comes back in the error.
    pub async fn send(&mut self, value: H::Item) -> Result<(), SendError<H::Item>> {
        let mut value = Some(value);
        let this = Withdraw(self);
        poll_fn(|cx| {
            let this = &mut *this.0;
            loop {
                let Some(v) = value.take() else {
                    unreachable!("polled after it completed")
                };
                match this.handle.try_put(v) {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(TrySendError::Full(v)) => value = Some(v),
                    Err(TrySendError::Disconnected(v)) => {
                        return Poll::Ready(Err(SendError::Disconnected(v)));
                    }
                    Err(TrySendError::Corrupted(v, c)) => {
                        return Poll::Ready(Err(SendError::Corrupted(v, c)));
                    }
                }
                if this.poll_ready(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await
    }
}

/// `send(&[u8]).await` for the byte-frame producers, which wait for room for the whole
/// frame (more than [`Waitable::ready`]'s one slot).
macro_rules! async_frame_send {
    ($ty:ty, $sync:literal) => {
        impl Async<$ty> {
            /// Sends `payload` as one frame, awaiting room for all of it while there is
            /// none.
            ///
            /// Cancellation safe: dropped before it completes, it has sent nothing.
            ///
            /// # Errors
            ///
            #[doc = concat!("As [`", $sync, "`], never `Full` nor `Timeout`.")]
            pub async fn send(&mut self, payload: &[u8]) -> Result<(), stream::SendError> {
                let len = payload.len();
                loop {
                    match self.handle.try_send(payload) {
                        Err(stream::SendError::Full) => {
                            let this = Withdraw(self);
                            poll_fn(|cx| this.0.poll_until(cx, &mut |h, p| h.ready_for(len, p)))
                                .await;
                        }
                        done => return done,
                    }
                }
            }
        }
    };
}
async_frame_send!(stream::Producer, "stream::Producer::send");
async_frame_send!(
    broadcast::frames::FramePublisher,
    "broadcast::frames::FramePublisher::send"
);

impl Async<stream::Consumer> {
    /// Receives the next frame into `buf` (cleared first), awaiting one while the ring
    /// is empty; returns the payload's length.
    ///
    /// Cancellation safe: a frame is taken only by the poll that copies it out.
    ///
    /// # Errors
    ///
    /// As [`stream::Consumer::recv`].
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        loop {
            let got = match self.handle.try_recv() {
                Ok(frame) => {
                    buf.clear();
                    buf.extend_from_slice(&frame);
                    Ok(frame.len())
                }
                Err(TryRecvError::Empty) => Err(None),
                Err(TryRecvError::Disconnected) => Err(Some(RecvError::Disconnected)),
                Err(TryRecvError::Corrupted(c)) => Err(Some(RecvError::Corrupted(c))),
            };
            match got {
                Ok(len) => return Ok(len),
                Err(Some(e)) => return Err(e),
                Err(None) => self.ready().await,
            }
        }
    }
}

impl Async<broadcast::frames::FrameSubscriber> {
    /// Receives the next whole frame into `buf` (cleared first), awaiting one while
    /// there is none; returns its length.
    ///
    /// Cancellation safe: a frame is taken only by the poll that copies it out.
    ///
    /// # Errors
    ///
    /// As [`broadcast::frames::FrameSubscriber::recv`].
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, broadcast::RecvError> {
        use broadcast::{RecvError as E, TryRecvError as T};
        loop {
            let got = match self.handle.try_recv() {
                Ok(frame) => {
                    buf.clear();
                    buf.extend_from_slice(frame);
                    Ok(frame.len())
                }
                Err(T::Empty) => Err(None),
                Err(T::Lagged { missed }) => Err(Some(E::Lagged { missed })),
                Err(T::Untethered) => Err(Some(E::Untethered)),
                Err(T::Disconnected) => Err(Some(E::Disconnected)),
                Err(T::Corrupted(c)) => Err(Some(E::Corrupted(c))),
            };
            match got {
                Ok(len) => return Ok(len),
                Err(Some(e)) => return Err(e),
                Err(None) => self.ready().await,
            }
        }
    }
}

/// One task waiting: the futex word it waits on, the value the word holds until the
/// ring's event count is notified, and until when it may sleep (a liveness probe, or
/// the slice of an unreached fence).
#[derive(Debug)]
struct Entry {
    word: *const AtomicU32,
    value: u32,
    until: Option<Instant>,
    waker: Waker,
    /// Woken already: left out of the next sleep until withdrawn.
    fired: bool,
    /// Keeps `word` mapped while the entry (or a sleep using it) lasts.
    _keep: Arc<KeepAlive>,
}

// SAFETY: `word` points into memory `_keep` keeps mapped, and is only read atomically;
// the rest is `Send`.
unsafe impl Send for Entry {}

/// The reactor: the registered entries, and the doorbell word that a registration rings
/// to make the reactor thread take a new entry into its sleep.
#[derive(Debug, Default)]
struct Reactor {
    state: Mutex<State>,
    doorbell: AtomicU32,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<u64, Entry>,
    next: u64,
    /// The reactor thread is (about to be) asleep on the doorbell value it read.
    sleeping: bool,
}

/// How often the reactor checks words it could not sleep on (more than `futex_waitv`
/// takes, or no `futex_waitv` at all): 1 ms.
const POLL_SLICE: Duration = Duration::from_millis(1);

/// The process's reactor, its thread started at the first call.
fn reactor() -> &'static Reactor {
    static REACTOR: OnceLock<&'static Reactor> = OnceLock::new();
    REACTOR.get_or_init(|| {
        let reactor: &'static Reactor = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("shm-reactor".into())
            .spawn(move || reactor.run())
            .expect("spawning the shm-ring reactor thread");
        reactor
    })
}

impl Reactor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the entries consistent (each step is one
        // map operation): go on with them.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `entry`; rings the doorbell so that a sleeping reactor takes it in.
    fn register(&self, entry: Entry) -> u64 {
        let wake = {
            let mut state = self.lock();
            let id = state.next;
            state.next += 1;
            state.entries.insert(id, entry);
            // Relaxed: under the lock the reactor reads it under; the futex compares it
            // atomically with the sleep.
            self.doorbell.fetch_add(1, Ordering::Relaxed);
            let wake = std::mem::replace(&mut state.sleeping, false);
            (id, wake)
        };
        if wake.1 {
            futex::wake_all(&self.doorbell);
        }
        wake.0
    }

    /// Removes entry `id` (dropped outside the lock). An entry the reactor sleeps on
    /// (not fired) rings the doorbell, so that the reactor lets go of its mapping now
    /// rather than at its next wake-up.
    fn remove(&self, id: u64) {
        let (entry, wake) = {
            let mut state = self.lock();
            let entry = state.entries.remove(&id);
            let wake = state.sleeping && entry.as_ref().is_some_and(|e| !e.fired);
            if wake {
                // Relaxed: as in `register`.
                self.doorbell.fetch_add(1, Ordering::Relaxed);
                state.sleeping = false;
            }
            (entry, wake)
        };
        if wake {
            futex::wake_all(&self.doorbell);
        }
        drop(entry);
    }

    /// The reactor thread: sleeps on every waiting entry's word and the doorbell, wakes
    /// the tasks whose word moved or whose time came.
    fn run(&self) {
        let mut keep: Vec<Arc<KeepAlive>> = Vec::new();
        let mut words: Vec<(*const AtomicU32, u32)> = Vec::new();
        let mut wakers: Vec<Waker> = Vec::new();
        let mut unsupported = false;
        loop {
            keep.clear();
            words.clear();
            let (bell, until) = {
                let mut state = self.lock();
                // Relaxed: under the lock registrations ring it under.
                let bell = self.doorbell.load(Ordering::Relaxed);
                let mut until: Option<Instant> = None;
                let mut overflow = false;
                for entry in state.entries.values().filter(|e| !e.fired) {
                    until = earliest(until, entry.until);
                    if words.contains(&(entry.word, entry.value)) {
                        continue;
                    }
                    if words.len() + 1 == WAIT_ANY_MAX {
                        overflow = true;
                        continue;
                    }
                    words.push((entry.word, entry.value));
                    keep.push(entry._keep.clone());
                }
                if overflow || unsupported {
                    until = earliest(until, Instant::now().checked_add(POLL_SLICE));
                }
                state.sleeping = true;
                (bell, until)
            };
            if unsupported {
                futex::wait(&self.doorbell, bell, until);
            } else {
                let mut list: Vec<(&AtomicU32, u32)> = vec![(&self.doorbell, bell)];
                // SAFETY: every word points into memory a `KeepAlive` in `keep` keeps
                // mapped until after the sleep.
                list.extend(words.iter().map(|&(w, v)| (unsafe { &*w }, v)));
                if let Err(WaitAnyError::Unsupported) = futex::wait_any(&list, until) {
                    // From now on, check every word every millisecond.
                    unsupported = true;
                }
            }
            let now = Instant::now();
            {
                let mut state = self.lock();
                state.sleeping = false;
                for entry in state.entries.values_mut().filter(|e| !e.fired) {
                    // SAFETY: the entry's `_keep` keeps the word mapped while it is in
                    // the map, and the lock is held.
                    let word = unsafe { &*entry.word };
                    // Relaxed: a moved word only says "poll again"; the task's poll
                    // makes its own Acquire loads of the ring.
                    let moved = word.load(Ordering::Relaxed) != entry.value;
                    if moved || entry.until.is_some_and(|u| now >= u) {
                        entry.fired = true;
                        wakers.push(entry.waker.clone());
                    }
                }
            }
            for waker in wakers.drain(..) {
                // A waker of a foreign executor that panics must not end the thread
                // every task of the process depends on.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
            }
        }
    }
}
