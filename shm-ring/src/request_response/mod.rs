//! Request/response over shared memory: clients call, server workers answer, each
//! response lands in its own call, and a late one is dropped and counted.
//!
//! A service at a location is two segments: the service segment itself (kind
//! `service`: a table of workers and clients, and [`CALLS_PER_CLIENT`] call slots per
//! client) and a request ring next to it (`<location>.requests`, an [`mpmc`] ring of
//! 16-byte tickets). A [`Client`] writes its request in place into one of its call
//! slots, marks the slot waiting (with the call's generation), and sends a ticket
//! naming the slot through the request ring. A [`Server`] worker (several may share the
//! requests; each ticket goes to one) takes the ticket, claims the call by a
//! compare-and-swap of the slot's state word, reads the request in place
//! ([`Request`]), and writes its response in place into the same slot; then it wakes
//! the client, which parks on its own event count while it waits (only when it
//! really sleeps: the worker's notify is one load otherwise). The correlation is the
//! slot and the generation: a response can only land in the call it answers. The
//! protocol is in the `calls` module.
//!
//! - Several calls in flight per client: [`Client::send`] returns a [`Pending`] per
//!   call, each answered through its own slot; [`Client::call`] sends and waits.
//! - Deadlines: a call given up (its deadline passed, or its `Pending` dropped) moves
//!   its slot out of the worker's reach, so a response that comes later is dropped by
//!   the worker and counted ([`ClientStats::late`]), never delivered to a later call.
//! - Server death: a waiting client probes the workers' locks every `LIVENESS_PERIOD`:
//!   a call whose worker died, or that no live worker can take, fails with
//!   [`CallError::ServerGone`]. A server that starts again serves the next calls; the
//!   clients go on with the handles they have.
//! - Client death: its calls' responses are dropped as late, and whoever attaches in its
//!   entry next gets its slots back as the workers let go of them.
//!
//! # Examples
//!
//! ```
//! use shm_ring::request_response::Builder;
//! # let name = format!("doc-rr-{}", std::process::id());
//! let service = Builder::<u64, u64>::new(name.as_str()).workers(1).clients(4);
//! let mut server = service.server()?;
//! let client = service.client()?;
//! let pending = client.send(&21)?;
//! let request = server.try_recv()?;
//! let doubled = *request * 2;
//! request.respond(&doubled);
//! assert_eq!(pending.wait(None)?, 42);
//! # drop((server, client));
//! # shm_alloc::Segment::remove(&name.as_str().into())?;
//! # shm_alloc::Segment::remove(&format!("{name}.requests").as_str().into())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod calls;
pub(crate) mod layout;

use core::cell::{Cell, RefCell};
use core::marker::PhantomData;
use std::time::Instant;

use shm_alloc::participants::{Settle, Table};
use shm_alloc::{Location, SegmentOptions};
use shm_sync::WaitStrategy;
use shm_sync::atomic::Ordering;

pub use calls::CALLS_PER_CLIENT;
use calls::{GiveUp, Poll};
use layout::{CLIENT, CallSlot, Control, Line, ServiceLayout, Ticket, WORKER, slots_for};

use crate::core::attach::{OpenMode, Settings, attach};
use crate::core::blocking::{Refusal, block};
use crate::core::region::{Region, RoleLock};
use crate::error::{Corruption, Error, RecvTimeoutError, TryRecvError, TrySendError};
use crate::message::Message;
use crate::mpmc;

/// The default worker limit.
pub const DEFAULT_WORKERS: u32 = 4;
/// The default client limit.
pub const DEFAULT_CLIENTS: u32 = 64;
/// The default request ring capacity, in tickets.
pub const DEFAULT_CAPACITY: u64 = 1024;

type ServiceRegion<Req, Resp> = Region<Control, Line, CallSlot<Req, Resp>>;

/// Copies `from` over `to`, byte for byte (a message is any bytes of its size).
fn assign<T: Message>(to: &mut T, from: &T) {
    to.as_mut_bytes().copy_from_slice(from.as_bytes());
}

/// A copy of `value`.
fn copy<T: Message>(value: &T) -> T {
    let mut out = T::new_zeroed();
    assign(&mut out, value);
    out
}

/// Why a call returned no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The request ring is full (`send`; the blocking calls wait instead).
    #[error("the service's request queue is full")]
    Full,
    /// This client has [`CALLS_PER_CLIENT`] calls in flight.
    #[error("{limit} calls in flight: wait for one first")]
    TooManyCalls {
        /// The most calls a client has in flight.
        limit: usize,
    },
    /// The deadline passed: the call is given up, and a response that comes later is
    /// dropped and counted as late.
    #[error("timed out waiting for the response")]
    Timeout,
    /// The worker serving the call died, or no live worker can take it.
    #[error("the server is gone")]
    ServerGone,
    /// The worker dropped the request without an answer.
    #[error("the server dropped the request without a response")]
    Dropped,
    /// The service's shared state is inconsistent.
    #[error("corrupted service: {0}")]
    Corrupted(Corruption),
}

/// A client's counts, from [`Client::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls made.
    pub calls: u64,
    /// Responses received.
    pub responses: u64,
    /// Responses that came after their call was given up, dropped.
    pub late: u64,
}

/// Opens or creates a service and attaches a server worker or a client to it.
#[derive(Debug, Clone)]
pub struct Builder<Req: Message, Resp: Message> {
    location: Location,
    capacity: Option<u64>,
    workers: Option<u32>,
    clients: Option<u32>,
    wait: WaitStrategy,
    options: SegmentOptions,
    mode: OpenMode,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req: Message, Resp: Message> Builder<Req, Resp> {
    /// A builder for the service at `location` (a name under `/dev/shm`, or a path); its
    /// request ring is at the same place with `.requests` appended.
    pub fn new(location: impl Into<Location>) -> Self {
        Builder {
            location: location.into(),
            capacity: None,
            workers: None,
            clients: None,
            wait: WaitStrategy::default(),
            options: SegmentOptions::default(),
            mode: OpenMode::default(),
            _types: PhantomData,
        }
    }

    /// The request ring's capacity, in requests (a power of two): used when creating,
    /// checked when opening. Unset: [`DEFAULT_CAPACITY`] when creating, any when opening.
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The worker limit: used when creating, checked (with the client limit) when
    /// opening. Unset: [`DEFAULT_WORKERS`].
    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The client limit: used when creating, checked (with the worker limit) when
    /// opening. Unset: [`DEFAULT_CLIENTS`].
    pub fn clients(mut self, clients: u32) -> Self {
        self.clients = Some(clients);
        self
    }

    /// The wait strategy of the blocking calls (a client waiting for its response, a
    /// worker for requests, either for room in the request ring).
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Segment options of both segments.
    pub fn segment_options(mut self, options: SegmentOptions) -> Self {
        self.options = options;
        self
    }

    /// Whether to create, open, or either (the default), both segments.
    pub fn mode(mut self, mode: OpenMode) -> Self {
        self.mode = mode;
        self
    }

    fn limits(&self) -> (u32, u32) {
        (
            self.workers.unwrap_or(DEFAULT_WORKERS),
            self.clients.unwrap_or(DEFAULT_CLIENTS),
        )
    }

    /// The request ring of `service` (attached first: its limits size the ring).
    fn requests(&self, service: &Service<Req, Resp>) -> mpmc::Builder<Ticket> {
        let location = match &self.location {
            Location::Name(name) => Location::Name(format!("{name}.requests")),
            Location::Path(path) => {
                let mut path = path.clone().into_os_string();
                path.push(".requests");
                Location::Path(path.into())
            }
        };
        // Each worker holds a consumer and a producer entry, each client a producer.
        let ring = mpmc::Builder::<Ticket>::new(location)
            .participants(2 * service.workers + service.clients)
            .wait_strategy(self.wait)
            .segment_options(self.options.clone())
            .mode(self.mode);
        match (self.capacity, self.mode) {
            (Some(capacity), _) => ring.capacity(capacity),
            // Opening: whatever the creator chose.
            (None, OpenMode::Open) => ring,
            (None, _) => ring.capacity(DEFAULT_CAPACITY),
        }
    }

    fn attach(&self) -> Result<Service<Req, Resp>, Error> {
        let (workers, clients) = self.limits();
        let expected =
            (self.workers.is_some() || self.clients.is_some()).then_some((workers, clients));
        let layout = ServiceLayout::<Req, Resp> {
            workers,
            clients,
            expected,
            _types: PhantomData,
        };
        let mut settings = Settings::new(self.location.clone(), slots_for(clients));
        settings.capacity = expected.map(|(_, c)| slots_for(c));
        settings.wait = self.wait;
        settings.options = self.options.clone();
        settings.mode = self.mode;
        let region = attach(&settings, &layout)?;
        Service::new(region, self.wait)
    }

    /// Attaches a server worker in the first free worker entry.
    ///
    /// # Errors
    ///
    /// [`Error::ParticipantsFull`] while every worker entry is held; those of opening or
    /// creating either segment ([`Error::Segment`], [`Error::ParticipantsMismatch`],
    /// [`Error::Corrupted`], [`Error::InvalidCapacity`]).
    pub fn server(&self) -> Result<Server<Req, Resp>, Error> {
        let service = self.attach()?;
        let requests = self.requests(&service);
        let workers = service.workers;
        let (index, session, lock) = service.claim(0..workers, WORKER)?;
        let consumer = requests.consumer()?;
        // The ring exists now (created by this very call under `OpenMode::Create`).
        let keeps_open = requests.mode(OpenMode::Open).producer()?;
        Ok(Server {
            requests: consumer,
            _keeps_open: keeps_open,
            index,
            session,
            lock: Some(lock),
            service,
        })
    }

    /// Attaches a client in the first free client entry.
    ///
    /// # Errors
    ///
    /// As [`server`](Self::server), for the client entries.
    pub fn client(&self) -> Result<Client<Req, Resp>, Error> {
        let service = self.attach()?;
        let (workers, clients) = (service.workers, service.clients);
        let (index, session, lock) = service.claim(workers..workers + clients, CLIENT)?;
        // Only this entry's client waits on its `responded`: a count left by a holder
        // that died waiting unmarked (an async or `WaitSet` wait) goes now.
        service.line(index).responded.reset_waiters();
        let first = (index - workers) as usize * CALLS_PER_CLIENT;
        // What a previous holder of the entry left: its slots are free once its workers
        // let go of them.
        let slots = (first..first + CALLS_PER_CLIENT)
            .map(|k| {
                let state = &service.slot(k).state;
                // Relaxed: the previous holder's words, ordered by its lock.
                let word = state.load(Ordering::Relaxed);
                let generation = calls::generation_of(word);
                match calls::state_of(word) {
                    calls::IDLE => Cell::new(Local::Free(generation)),
                    calls::RESPONDED | calls::DROPPED => {
                        calls::finish(state, generation);
                        Cell::new(Local::Free(generation))
                    }
                    _ => Cell::new(Local::GivenUp(generation)),
                }
            })
            .collect();
        Ok(Client {
            requests: RefCell::new(self.requests(&service).producer()?),
            first,
            slots,
            index,
            session,
            lock: Some(lock),
            calls: Cell::new(0),
            responses: Cell::new(0),
            service,
        })
    }
}

// SAFETY: the region's pointers point into memory its backing owns (a mapping), valid
// from any thread; every shared access goes through atomics or through the call slots'
// state machine, which gives each request and response one writer at a time. Messages
// are plain bytes (`Message: FromBytes`).
unsafe impl<Req: Message + Send, Resp: Message + Send> Send for Service<Req, Resp> {}

/// A handle's view of the service segment.
struct Service<Req, Resp> {
    region: ServiceRegion<Req, Resp>,
    workers: u32,
    clients: u32,
    wait: WaitStrategy,
}

impl<Req: Message, Resp: Message> Service<Req, Resp> {
    fn new(region: ServiceRegion<Req, Resp>, wait: WaitStrategy) -> Result<Self, Error> {
        let control = region.control();
        // Relaxed: written by the creator before the segment was published.
        let (workers, clients) = (
            control.workers.load(Ordering::Relaxed),
            control.clients.load(Ordering::Relaxed),
        );
        let fits = workers > 0
            && clients > 0
            && workers.checked_add(clients) == Some(region.entry_count())
            && slots_for(clients) <= region.capacity();
        if !fits {
            return Err(Error::Corrupted(Corruption::State {
                word: "the service's worker and client limits",
                found: workers,
                expected: "limits that add up to the table's entries, with a call slot for each client's calls",
            }));
        }
        Ok(Service {
            region,
            workers,
            clients,
            wait,
        })
    }

    fn line(&self, index: u32) -> &Line {
        self.region.entry(index)
    }

    fn slot(&self, index: usize) -> &CallSlot<Req, Resp> {
        self.region.slot(index as u64)
    }

    /// Claims the first free entry in `range` as `state`, settling a dead holder found
    /// there: its count as a parked waiter.
    fn claim(
        &self,
        range: core::ops::Range<u32>,
        state: u32,
    ) -> Result<(u32, u32, RoleLock), Error> {
        let table = Table::new(self.region.entries(), &self.region);
        let claimed = table
            .claim_in(range, state, |index, _| {
                let line = self.line(index);
                line.responded.settle_dead_waiter(line.entry.parked());
                Ok::<_, Error>(Settle::Done)
            })?
            .ok_or(Error::ParticipantsFull {
                limit: if state == WORKER {
                    self.workers
                } else {
                    self.clients
                },
            })?;
        table.mark(&claimed);
        Ok((claimed.index, claimed.session, claimed.guard))
    }

    /// Whether worker `worker` lives (its lock is held).
    fn worker_alive(&self, worker: u16) -> bool {
        u32::from(worker) < self.workers && self.region.is_locked(u32::from(worker))
    }

    /// Whether any worker lives.
    fn any_worker(&self) -> bool {
        (0..self.workers).any(|w| self.region.is_locked(w))
    }

    fn leave(&self, index: u32, session: u32) {
        Table::new(self.region.entries(), &self.region).free(index, session);
    }
}

/// A client's view of one of its call slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    /// Idle, after the call of this generation.
    Free(u32),
    /// A `Pending` of this generation waits on it.
    InUse(u32),
    /// The call of this generation was given up while a worker held it: free once the
    /// worker lets go, or is found dead.
    GivenUp(u32),
}

/// A client of a service: sends requests and waits for their responses, up to
/// [`CALLS_PER_CLIENT`] calls in flight. Its calls take `&self`, so that several
/// [`Pending`] calls can wait at once; the handle is `Send`, not `Sync`.
pub struct Client<Req: Message, Resp: Message> {
    requests: RefCell<mpmc::Producer<Ticket>>,
    /// This client's first call slot.
    first: usize,
    slots: Vec<Cell<Local>>,
    index: u32,
    session: u32,
    lock: Option<RoleLock>,
    calls: Cell<u64>,
    responses: Cell<u64>,
    service: Service<Req, Resp>,
}

impl<Req: Message, Resp: Message> core::fmt::Debug for Client<Req, Resp> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("client", &(self.index - self.service.workers))
            .finish_non_exhaustive()
    }
}

impl<Req: Message, Resp: Message> Client<Req, Resp> {
    /// Sends `request` and waits for its response until `deadline` (`None`: for ever).
    ///
    /// # Errors
    ///
    /// Those of [`send_deadline`](Self::send_deadline) and [`Pending::wait`].
    pub fn call(&self, request: &Req, deadline: Option<Instant>) -> Result<Resp, CallError> {
        self.send_deadline(deadline, |r| assign(r, request))?
            .wait(deadline)
    }

    /// Sends `request` if the request ring has room now: the returned [`Pending`] waits
    /// for its response.
    ///
    /// # Errors
    ///
    /// [`CallError::Full`]; [`CallError::TooManyCalls`]; [`CallError::ServerGone`] when
    /// every worker that attached is gone; [`CallError::Corrupted`].
    pub fn send(&self, request: &Req) -> Result<Pending<'_, Req, Resp>, CallError> {
        self.put(None, |r| assign(r, request))
    }

    /// Writes a request in place (`write` gets the slot's request, holding whatever the
    /// last call through the slot left) and sends it, waiting until `deadline` (`None`:
    /// for ever) for room in the request ring.
    ///
    /// # Errors
    ///
    /// [`CallError::Timeout`] when the deadline passes with the ring full; otherwise as
    /// [`send`](Self::send).
    pub fn send_deadline(
        &self,
        deadline: Option<Instant>,
        write: impl FnOnce(&mut Req),
    ) -> Result<Pending<'_, Req, Resp>, CallError> {
        self.put(Some(deadline), write)
    }

    fn put(
        &self,
        deadline: Option<Option<Instant>>,
        write: impl FnOnce(&mut Req),
    ) -> Result<Pending<'_, Req, Resp>, CallError> {
        let k = self.free_slot().ok_or(CallError::TooManyCalls {
            limit: CALLS_PER_CLIENT,
        })?;
        let slot = self.service.slot(self.first + k);
        // SAFETY: the slot is idle and this client's (its entry's lock, `Local::Free`):
        // no worker reads the request until the ticket below names this generation.
        slot.request.with_mut(|r| write(unsafe { &mut *r }));
        let generation = calls::start(&slot.state);
        let ticket = Ticket {
            slot: (self.first + k) as u32,
            generation,
            _reserved: 0,
        };
        let mut requests = self.requests.borrow_mut();
        let sent = match deadline {
            None => requests.try_send(ticket).map_err(|e| match e {
                TrySendError::Full(_) => CallError::Full,
                TrySendError::Disconnected(_) => CallError::ServerGone,
                TrySendError::Corrupted(_, c) => CallError::Corrupted(c),
            }),
            Some(deadline) => requests
                .send_deadline(ticket, deadline)
                .map_err(|e| match e {
                    crate::error::SendTimeoutError::Timeout(_) => CallError::Timeout,
                    crate::error::SendTimeoutError::Disconnected(_) => CallError::ServerGone,
                    crate::error::SendTimeoutError::Corrupted(_, c) => CallError::Corrupted(c),
                }),
        };
        if let Err(e) = sent {
            // No ticket names this generation: no worker can take it.
            let _ = calls::give_up(&slot.state, generation);
            self.slots[k].set(Local::Free(generation));
            return Err(e);
        }
        self.slots[k].set(Local::InUse(generation));
        self.calls.set(self.calls.get() + 1);
        let line = self.service.line(self.index);
        // Relaxed: a counter, written by its owner only.
        line.calls.store(self.calls.get(), Ordering::Relaxed);
        Ok(Pending {
            client: self,
            k,
            generation,
            done: false,
            seen: Cell::new(None),
        })
    }

    /// A free call slot: one that is free, or whose given-up call's worker let go of
    /// it (a response it left is counted late), or died.
    fn free_slot(&self) -> Option<usize> {
        if let Some(k) = self
            .slots
            .iter()
            .position(|s| matches!(s.get(), Local::Free(_)))
        {
            return Some(k);
        }
        for (k, local) in self.slots.iter().enumerate() {
            let Local::GivenUp(generation) = local.get() else {
                continue;
            };
            let state = &self.service.slot(self.first + k).state;
            let free = match calls::poll(state, generation) {
                Poll::Idle => true,
                Poll::Responded => {
                    // The response of a given-up call: dropped, late.
                    calls::finish(state, generation);
                    // Relaxed: a counter the workers add to as well.
                    self.service
                        .line(self.index)
                        .late
                        .fetch_add(1, Ordering::Relaxed);
                    true
                }
                Poll::Dropped => {
                    calls::finish(state, generation);
                    true
                }
                Poll::Serving(w) => {
                    !self.service.worker_alive(w) && calls::abandon(state, generation, w)
                }
                Poll::Waiting => calls::give_up(state, generation) == GiveUp::Idle,
                // Not this client's word (a corrupt peer's): the slot stays out of use.
                Poll::Foreign(_) => false,
            };
            if free {
                local.set(Local::Free(generation));
                return Some(k);
            }
        }
        None
    }

    /// This client's counts.
    #[must_use]
    pub fn stats(&self) -> ClientStats {
        let line = self.service.line(self.index);
        ClientStats {
            calls: self.calls.get(),
            responses: self.responses.get(),
            // Relaxed: a snapshot of a counter the workers add to.
            late: line.late.load(Ordering::Relaxed),
        }
    }

    /// This client's number: `0..clients`.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.index - self.service.workers
    }
}

impl<Req: Message, Resp: Message> Drop for Client<Req, Resp> {
    fn drop(&mut self) {
        if self.lock.is_some() {
            self.service.leave(self.index, self.session);
            self.lock = None;
        }
    }
}

/// A call in flight: wait for its response with [`wait`](Self::wait). Dropped
/// unanswered, the call is given up (a response that comes later is dropped as late).
#[must_use = "dropping a Pending gives the call up"]
pub struct Pending<'c, Req: Message, Resp: Message> {
    client: &'c Client<Req, Resp>,
    k: usize,
    generation: u32,
    done: bool,
    /// How the call ended, found by a readiness probe (`Waitable::ready`) that acted on
    /// it (gave it up to a dead worker): the next poll returns it.
    seen: Cell<Option<Outcome>>,
}

impl<Req: Message, Resp: Message> core::fmt::Debug for Pending<'_, Req, Resp> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pending")
            .field("slot", &self.k)
            .field("generation", &self.generation)
            .finish()
    }
}

/// How a call ended, found by a poll.
#[derive(Clone, Copy)]
enum Outcome {
    Responded,
    Dropped,
    ServerGone,
}

impl<Req: Message, Resp: Message> Pending<'_, Req, Resp> {
    fn slot(&self) -> &CallSlot<Req, Resp> {
        self.client.service.slot(self.client.first + self.k)
    }

    /// One look at the call: `Busy` while it is served or waits; with `probe`, a call
    /// whose worker is dead, or that no live worker can take, is over.
    fn step(&self, probe: bool) -> Result<Outcome, Refusal> {
        if let Some(outcome) = self.seen.get() {
            return Ok(outcome);
        }
        let service = &self.client.service;
        match calls::poll(&self.slot().state, self.generation) {
            Poll::Responded => Ok(Outcome::Responded),
            Poll::Dropped => Ok(Outcome::Dropped),
            Poll::Serving(w) if probe && !service.worker_alive(w) => {
                calls::abandon(&self.slot().state, self.generation, w);
                Ok(Outcome::ServerGone)
            }
            Poll::Waiting if probe && !service.any_worker() => {
                match calls::give_up(&self.slot().state, self.generation) {
                    GiveUp::Idle => Ok(Outcome::ServerGone),
                    // A worker took it meanwhile: go on waiting.
                    _ => Err(Refusal::Busy),
                }
            }
            Poll::Serving(_) | Poll::Waiting => Err(Refusal::Busy),
            Poll::Idle | Poll::Foreign(_) => {
                // Relaxed: a report.
                let found = self.slot().state.load(Ordering::Relaxed);
                Err(Refusal::Corrupted(Corruption::State {
                    word: "a call slot's state",
                    found: found as u32,
                    expected: "a state of this client's call, of its generation",
                }))
            }
        }
    }

    /// Whether the response has come (without waiting): `Ok(Some(response))`, or
    /// `Ok(None)` while the call is served.
    ///
    /// # Errors
    ///
    /// [`CallError::Dropped`], [`CallError::Corrupted`].
    pub fn try_recv(&mut self) -> Result<Option<Resp>, CallError> {
        match self.step(false) {
            Ok(outcome) => self.end(outcome, copy).map(Some),
            Err(Refusal::Busy) => Ok(None),
            Err(Refusal::Corrupted(c)) => Err(CallError::Corrupted(c)),
            Err(Refusal::Disconnected) => Err(CallError::ServerGone),
        }
    }

    /// Waits for the response until `deadline` (`None`: for ever), with the client's
    /// wait strategy, and returns it.
    ///
    /// # Errors
    ///
    /// [`CallError::Timeout`] (the call is given up); [`CallError::ServerGone`] within
    /// `LIVENESS_PERIOD` of the server's death; [`CallError::Dropped`];
    /// [`CallError::Corrupted`].
    pub fn wait(self, deadline: Option<Instant>) -> Result<Resp, CallError> {
        self.wait_with(deadline, copy)
    }

    /// [`wait`](Self::wait), reading the response in place: `read` gets it in its slot.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_with<R>(
        mut self,
        deadline: Option<Instant>,
        read: impl FnOnce(&Resp) -> R,
    ) -> Result<R, CallError> {
        let client = self.client;
        let line = client.service.line(client.index);
        let outcome = match self.step(false) {
            Err(Refusal::Busy) => block(
                &line.responded,
                Some(line.entry.parked()),
                &line.activity,
                client.service.wait,
                client.service.region.peers_may_die(),
                deadline,
                |probe| self.step(probe),
            ),
            done => done,
        };
        match outcome {
            Ok(outcome) => self.end(outcome, read),
            Err(Refusal::Busy) => {
                // The deadline passed: give up (a response that came just now is taken).
                match calls::give_up(&self.slot().state, self.generation) {
                    GiveUp::Responded => self.end(Outcome::Responded, read),
                    GiveUp::Dropped => self.end(Outcome::Dropped, read),
                    GiveUp::Idle => {
                        self.release(Local::Free(self.generation));
                        Err(CallError::Timeout)
                    }
                    GiveUp::Held(_) | GiveUp::Foreign(_) => {
                        self.release(Local::GivenUp(self.generation));
                        Err(CallError::Timeout)
                    }
                }
            }
            Err(Refusal::Corrupted(c)) => {
                self.release(Local::GivenUp(self.generation));
                Err(CallError::Corrupted(c))
            }
            Err(Refusal::Disconnected) => {
                self.release(Local::GivenUp(self.generation));
                Err(CallError::ServerGone)
            }
        }
    }

    /// Ends the call with what a poll found.
    fn end<R>(&mut self, outcome: Outcome, read: impl FnOnce(&Resp) -> R) -> Result<R, CallError> {
        match outcome {
            Outcome::Responded => {
                // SAFETY: RESPONDED: the slot is this client's until `finish`, and the
                // worker's writes are visible (SYNC(call-response)).
                let value = self.slot().response.with(|r| read(unsafe { &*r }));
                calls::finish(&self.slot().state, self.generation);
                self.release(Local::Free(self.generation));
                let client = self.client;
                client.responses.set(client.responses.get() + 1);
                // Relaxed: a counter, written by its owner only.
                client
                    .service
                    .line(client.index)
                    .responses
                    .store(client.responses.get(), Ordering::Relaxed);
                Ok(value)
            }
            Outcome::Dropped => {
                calls::finish(&self.slot().state, self.generation);
                self.release(Local::Free(self.generation));
                Err(CallError::Dropped)
            }
            Outcome::ServerGone => {
                // `abandon` or `give_up` made it idle; if neither won, the slot waits.
                let idle = calls::poll(&self.slot().state, self.generation) == Poll::Idle;
                self.release(if idle {
                    Local::Free(self.generation)
                } else {
                    Local::GivenUp(self.generation)
                });
                Err(CallError::ServerGone)
            }
        }
    }

    fn release(&mut self, local: Local) {
        self.client.slots[self.k].set(local);
        self.done = true;
    }
}

impl<Req: Message, Resp: Message> Drop for Pending<'_, Req, Resp> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let state = &self.slot().state;
        let local = match calls::give_up(state, self.generation) {
            GiveUp::Idle => Local::Free(self.generation),
            GiveUp::Responded => {
                // Answered, never read: dropped, late.
                calls::finish(state, self.generation);
                let client = self.client;
                // Relaxed: a counter the workers add to as well.
                client
                    .service
                    .line(client.index)
                    .late
                    .fetch_add(1, Ordering::Relaxed);
                Local::Free(self.generation)
            }
            GiveUp::Dropped => {
                calls::finish(state, self.generation);
                Local::Free(self.generation)
            }
            GiveUp::Held(_) | GiveUp::Foreign(_) => Local::GivenUp(self.generation),
        };
        self.client.slots[self.k].set(local);
    }
}

/// A server worker: receives requests and answers each in place.
pub struct Server<Req: Message, Resp: Message> {
    requests: mpmc::Consumer<Ticket>,
    /// A producer entry that this worker holds for its whole life, so that the request
    /// ring never reads as disconnected while a worker serves (it takes requests while no
    /// client is attached).
    _keeps_open: mpmc::Producer<Ticket>,
    index: u32,
    session: u32,
    lock: Option<RoleLock>,
    service: Service<Req, Resp>,
}

impl<Req: Message, Resp: Message> core::fmt::Debug for Server<Req, Resp> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("worker", &self.index)
            .finish_non_exhaustive()
    }
}

impl<Req: Message, Resp: Message> Server<Req, Resp> {
    /// Takes the call a ticket names: `false` for a call given up before this worker
    /// took it (its response would be late: counted).
    fn take(&self, ticket: Ticket) -> Result<bool, Corruption> {
        let slots = u64::from(self.service.clients) * CALLS_PER_CLIENT as u64;
        if u64::from(ticket.slot) >= slots {
            return Err(Corruption::State {
                word: "a request ticket's call slot",
                found: ticket.slot,
                expected: "a call slot of one of the service's clients",
            });
        }
        let slot = ticket.slot as usize;
        let client = self.service.workers + (slot / CALLS_PER_CLIENT) as u32;
        if !calls::take(
            &self.service.slot(slot).state,
            ticket.generation,
            self.index as u16,
        ) {
            self.late(client);
            return Ok(false);
        }
        let line = self.service.line(self.index);
        // Relaxed: a counter, written by its owner only.
        line.calls
            .store(line.calls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Ok(true)
    }

    fn late(&self, client: u32) {
        // Relaxed: a counter several workers add to.
        self.service
            .line(client)
            .late
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Receives the next request if one is queued, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`]; [`TryRecvError::Corrupted`] for a ticket that names no
    /// call slot, or a corrupt request ring. Never `Disconnected`: a worker takes
    /// requests while no client is attached.
    pub fn try_recv(&mut self) -> Result<Request<'_, Req, Resp>, TryRecvError> {
        loop {
            let ticket = self.requests.try_recv()?;
            // A given-up call is passed over.
            if self.take(ticket).map_err(TryRecvError::Corrupted)? {
                return Ok(self.rebuild(ticket));
            }
        }
    }

    /// Receives the next request, waiting until `deadline` (`None`: for ever) with the
    /// service's wait strategy.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`]; [`RecvTimeoutError::Corrupted`] as
    /// [`try_recv`](Self::try_recv).
    pub fn recv_deadline(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Request<'_, Req, Resp>, RecvTimeoutError> {
        loop {
            let ticket = self.requests.recv_deadline(deadline)?;
            if self.take(ticket).map_err(RecvTimeoutError::Corrupted)? {
                return Ok(self.rebuild(ticket));
            }
        }
    }

    /// The request of a ticket this worker took.
    fn rebuild(&self, ticket: Ticket) -> Request<'_, Req, Resp> {
        let slot = ticket.slot as usize;
        Request {
            server: self,
            slot,
            client: self.service.workers + (slot / CALLS_PER_CLIENT) as u32,
            generation: ticket.generation,
            answered: false,
        }
    }

    /// This worker's number: `0..workers`.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.index
    }

    /// Requests this worker took, and responses it sent.
    #[must_use]
    pub fn served(&self) -> (u64, u64) {
        let line = self.service.line(self.index);
        // Relaxed: counters, written by their owner only.
        (
            line.calls.load(Ordering::Relaxed),
            line.responses.load(Ordering::Relaxed),
        )
    }

    /// Ends this handle as if its process had been killed (tests of crash handling).
    #[doc(hidden)]
    pub fn simulate_crash(mut self) {
        self.lock = None;
    }
}

impl<Req: Message, Resp: Message> Drop for Server<Req, Resp> {
    fn drop(&mut self) {
        if self.lock.is_some() {
            self.service.leave(self.index, self.session);
            self.lock = None;
        }
    }
}

/// A request taken by a server worker: derefs to the request, in its client's call
/// slot; answer it with [`respond`](Self::respond) or
/// [`respond_with`](Self::respond_with). Dropped unanswered, the client's call fails
/// with [`CallError::Dropped`].
#[must_use = "a request dropped unanswered fails its call"]
pub struct Request<'s, Req: Message, Resp: Message> {
    server: &'s Server<Req, Resp>,
    slot: usize,
    client: u32,
    generation: u32,
    answered: bool,
}

impl<Req: Message, Resp: Message> core::fmt::Debug for Request<'_, Req, Resp> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Request")
            .field("slot", &self.slot)
            .field("generation", &self.generation)
            .finish()
    }
}

impl<Req: Message, Resp: Message> core::ops::Deref for Request<'_, Req, Resp> {
    type Target = Req;

    fn deref(&self) -> &Req {
        let slot = self.server.service.slot(self.slot);
        // SAFETY: TAKEN (or ABANDONED) by this worker: the client writes no request into
        // the slot until this worker lets go of it, and the request it wrote is visible
        // (SYNC(call-request)). A corrupt peer could still write it: `Req` is a message,
        // valid for any bytes.
        slot.request.with(|r| unsafe { &*r })
    }
}

impl<Req: Message, Resp: Message> Request<'_, Req, Resp> {
    /// The number of the worker that took the request ([`Server::id`]).
    #[must_use]
    pub fn worker(&self) -> u32 {
        self.server.index
    }

    /// The number of the client that sent it ([`Client::id`]).
    #[must_use]
    pub fn client(&self) -> u32 {
        self.client - self.server.service.workers
    }

    /// Answers with `response`. `false` if the call was given up meanwhile: the response
    /// is dropped, and counted late.
    pub fn respond(self, response: &Resp) -> bool {
        self.respond_with(|r| assign(r, response))
    }

    /// Answers in place: `write` gets the slot's response, holding whatever the last
    /// call through the slot left. `false` as [`respond`](Self::respond) (and `write`
    /// is not called).
    pub fn respond_with(mut self, write: impl FnOnce(&mut Resp)) -> bool {
        self.answered = true;
        let service = &self.server.service;
        let slot = service.slot(self.slot);
        let worker = self.server.index as u16;
        if !calls::let_go(&slot.state, self.generation, worker, true) {
            self.server.late(self.client);
            return false;
        }
        // SAFETY: WRITING: the slot's response is this worker's alone until it publishes
        // it, and the client's reads of the last one are done (SYNC(call-slot)).
        slot.response.with_mut(|r| write(unsafe { &mut *r }));
        calls::end_response(&slot.state, self.generation);
        let line = service.line(self.server.index);
        // Relaxed: a counter, written by its owner only.
        line.responses.store(
            line.responses.load(Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        line.activity
            .woke(service.line(self.client).responded.notify());
        true
    }
}

impl<Req: Message, Resp: Message> Drop for Request<'_, Req, Resp> {
    fn drop(&mut self) {
        if !self.answered {
            let service = &self.server.service;
            let slot = service.slot(self.slot);
            if calls::let_go(
                &slot.state,
                self.generation,
                self.server.index as u16,
                false,
            ) {
                let notified = service.line(self.client).responded.notify();
                service.line(self.server.index).activity.woke(notified);
            }
        }
    }
}

crate::wait_set::waitable_as!([Req: Message + 'static, Resp: Message + 'static] Server<Req, Resp>, requests);

crate::wait_set::waitable!(
    [Req: Message + 'static, Resp: Message + 'static] Pending<'_, Req, Resp>,
    ready: |this, probe| match this.step(probe) {
        Ok(outcome) => {
            // Kept: a probe may have given the call up, which a second look would not
            // find again.
            this.seen.set(Some(outcome));
            true
        }
        Err(refusal) => refusal != Refusal::Busy,
    },
    // Unmarked: the entry's one mark belongs to the client's blocking wait, and several
    // pending calls may wait at once here; a count left by a death is reset by the
    // next client of the entry.
    event: |this| shm_sync::Waiting {
        event: &this.client.service.line(this.client.index).responded,
        mark: None,
    },
    region: |this| this.client.service.region,
);
