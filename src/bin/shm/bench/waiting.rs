//! Echo sides that wait in other ways, for the rows that price them against a ring's
//! own blocking `recv` and against tokio: a `WaitSet` over 1 or 64 rings, and tokio
//! tasks awaiting `Async` rings or a tokio `UnixStream` on a current-thread or a
//! multi-thread runtime. Their timing sides are `shm-spsc-park`'s, `shm-spsc`'s and
//! `uds`'s.

use anyhow::{Result, anyhow};
use shm_transport::ring::spsc::{self, Consumer, Producer};
use shm_transport::ring::{TryRecvError, WaitSet};
use shm_transport::sync::WaitStrategy;

use super::transport::{Echoer, STOP, seq_of, spsc_echo_rings};

/// The echo side of `shm-waitset-*`: the ping ring first, then idle rings (their
/// producers kept, so that they never read as disconnected), all waited on in one
/// `WaitSet` that parks at once.
pub struct WaitSetEchoer<const N: usize> {
    rings: Vec<Consumer<[u8; N]>>,
    _idle: Vec<Producer<[u8; N]>>,
    tx: Producer<[u8; N]>,
    set: WaitSet,
}

/// Opens the rings named after `base`, and `rings - 1` idle rings on the heap.
pub fn waitset_echoer<const N: usize>(base: &str, rings: usize) -> Result<Box<dyn Echoer>> {
    let (rx, tx) = spsc_echo_rings::<N>(base, WaitStrategy::Park)?;
    let mut consumers = vec![rx];
    let mut idle = Vec::new();
    for _ in 1..rings {
        let (p, c) = spsc::channel::<[u8; N]>(1)?;
        idle.push(p);
        consumers.push(c);
    }
    Ok(Box::new(WaitSetEchoer {
        rings: consumers,
        _idle: idle,
        tx,
        set: WaitSet::with_wait_strategy(WaitStrategy::Park),
    }))
}

impl<const N: usize> Echoer for WaitSetEchoer<N> {
    fn echo(&mut self) -> Result<u64> {
        let mut echoed = 0;
        loop {
            self.set
                .wait(&mut self.rings, None)
                .map_err(|e| anyhow!("{e}"))?;
            let message = match self.rings[0].try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => continue,
                Err(e) => return Err(anyhow!("{e}")),
            };
            self.tx.send(message).map_err(|e| anyhow!("{e}"))?;
            if seq_of(&message) == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

#[cfg(feature = "tokio")]
pub use async_echo::{async_echoer, tokio_uds_echoer};

#[cfg(feature = "tokio")]
mod async_echo {
    use std::time::Duration;

    use anyhow::{Context, Result, anyhow};
    use shm_transport::ring::Async;
    use shm_transport::ring::spsc::{Consumer, Producer};
    use shm_transport::sync::WaitStrategy;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::runtime::Runtime;

    use super::super::transport::{Echoer, STOP, seq_of, spsc_echo_rings, uds_connect};

    /// A current-thread (`multi` false) or multi-thread runtime.
    fn runtime(multi: bool) -> Result<Runtime> {
        let mut builder = if multi {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        Ok(builder.enable_io().build()?)
    }

    /// The echo side's two rings, awaitable.
    type Rings<const N: usize> = (Async<Consumer<[u8; N]>>, Async<Producer<[u8; N]>>);

    /// The echo side of `shm-async*`: a task echoing through `Async` rings, which it
    /// takes for each round and gives back.
    pub struct AsyncEchoer<const N: usize> {
        runtime: Runtime,
        rings: Option<Rings<N>>,
    }

    /// Opens the rings named after `base` for a task of a current-thread (`multi`
    /// false) or multi-thread runtime.
    /// `spin`: how long the futures poll before they register with the reactor.
    pub fn async_echoer<const N: usize>(
        base: &str,
        multi: bool,
        spin: Duration,
    ) -> Result<Box<dyn Echoer>> {
        let (rx, tx) = spsc_echo_rings::<N>(base, WaitStrategy::default())?;
        Ok(Box::new(AsyncEchoer {
            runtime: runtime(multi)?,
            rings: Some((Async::with_spin(rx, spin), Async::with_spin(tx, spin))),
        }))
    }

    impl<const N: usize> Echoer for AsyncEchoer<N> {
        fn echo(&mut self) -> Result<u64> {
            let (mut rx, mut tx) = self.rings.take().context("rings lost by a failed round")?;
            let task = self.runtime.spawn(async move {
                let mut echoed = 0;
                loop {
                    let message = rx.recv().await.map_err(|e| anyhow!("{e}"))?;
                    tx.send(message).await.map_err(|e| anyhow!("{e}"))?;
                    if seq_of(&message) == STOP {
                        return Ok::<_, anyhow::Error>((echoed, rx, tx));
                    }
                    echoed += 1;
                }
            });
            let (echoed, rx, tx) = self.runtime.block_on(task)??;
            self.rings = Some((rx, tx));
            Ok(echoed)
        }
    }

    /// The echo side of `tokio-uds*`: a task echoing through a tokio `UnixStream`.
    pub struct TokioUdsEchoer {
        runtime: Runtime,
        stream: Option<tokio::net::UnixStream>,
        size: usize,
    }

    /// Connects to the abstract socket `name` for a task of a current-thread (`multi`
    /// false) or multi-thread runtime.
    pub fn tokio_uds_echoer(name: &str, size: usize, multi: bool) -> Result<Box<dyn Echoer>> {
        let std_stream = uds_connect(name)?;
        std_stream.set_nonblocking(true)?;
        let runtime = runtime(multi)?;
        let stream = runtime.block_on(async { tokio::net::UnixStream::from_std(std_stream) })?;
        Ok(Box::new(TokioUdsEchoer {
            runtime,
            stream: Some(stream),
            size,
        }))
    }

    impl Echoer for TokioUdsEchoer {
        fn echo(&mut self) -> Result<u64> {
            let mut stream = self
                .stream
                .take()
                .context("socket lost by a failed round")?;
            let size = self.size;
            let task = self.runtime.spawn(async move {
                let mut message = vec![0u8; size];
                let mut echoed = 0;
                loop {
                    stream
                        .read_exact(&mut message)
                        .await
                        .context("reading a ping")?;
                    stream.write_all(&message).await?;
                    if seq_of(&message) == STOP {
                        return Ok::<_, anyhow::Error>((echoed, stream));
                    }
                    echoed += 1;
                }
            });
            let (echoed, stream) = self.runtime.block_on(task)??;
            self.stream = Some(stream);
            Ok(echoed)
        }
    }
}
