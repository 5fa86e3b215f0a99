//! A tokio service that awaits a shared-memory ring and a Unix socket in one `select!`.
//!
//! ```sh
//! cargo run --release --example tokio_service
//! ```
//!
//! The service creates an SPSC ring of quotes and listens on a Unix socket (abstract
//! namespace), then starts this program again as a feed process that publishes quotes
//! into the ring, and connects a control client that asks for the running count over
//! the socket. One task serves both through `tokio::select!`: a quote (`rx.recv()` on an
//! [`Async`] ring, woken by the process's reactor thread) or a control line, whichever
//! comes first. `recv()` is cancellation safe, so losing the race to the socket loses
//! no quote. It ends when the feed is done, and prints what it saw.

use std::os::linux::net::SocketAddrExt;
use std::process::Command;
use std::time::{Duration, Instant};

use shm_transport::ring::{Async, OpenMode, RecvError, spsc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// A quote from the feed.
#[shm_transport::message(name = "examples::tokio_service::Quote/v1")]
#[derive(Debug, Clone, Copy)]
struct Quote {
    seq: u64,
    price: u64,
}

/// How many quotes the feed sends.
const QUOTES: u64 = 200_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("feed") => feed(&args.next().ok_or("feed RING")?),
        _ => service(),
    }
}

/// The feed process: sends `QUOTES` quotes into the ring, in bursts.
fn feed(ring: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut tx = spsc::Builder::<Quote>::new(ring)
        .mode(OpenMode::Open)
        .producer()?;
    for seq in 0..QUOTES {
        tx.send(Quote {
            seq,
            price: 10_000 + seq % 97,
        })?;
        if seq % 10_000 == 9_999 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(())
}

fn service() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("tokio-service-{}", std::process::id());
    let ring = spsc::Builder::<Quote>::new(name.as_str())
        .capacity(1024)
        .mode(OpenMode::Create)
        .consumer()?;
    let mut quotes = Async::new(ring);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let result = runtime.block_on(async {
        let socket = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let std_listener = std::os::unix::net::UnixListener::bind_addr(&socket)?;
        std_listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std_listener)?;
        let mut feed = Command::new(std::env::current_exe()?)
            .args(["feed", &name])
            .spawn()?;
        // A control client: asks for the count every 5 ms until the service hangs up.
        let client = tokio::spawn(async move {
            // Bound already: the connect completes at once.
            let stream = std::os::unix::net::UnixStream::connect_addr(&socket)?;
            stream.set_nonblocking(true)?;
            let stream = UnixStream::from_std(stream)?;
            let (reader, mut writer) = stream.into_split();
            let mut lines = BufReader::new(reader).lines();
            let mut answers = 0u64;
            loop {
                if writer.write_all(b"count\n").await.is_err() {
                    break;
                }
                match lines.next_line().await? {
                    Some(_) => answers += 1,
                    None => break,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, std::io::Error>(answers)
        });
        let (control, _) = listener.accept().await?;
        let (reader, mut writer) = control.into_split();
        let mut commands = BufReader::new(reader).lines();
        let (mut received, mut next, mut sum, mut asked) = (0u64, 0u64, 0u64, 0u64);
        loop {
            tokio::select! {
                quote = quotes.recv() => match quote {
                    Ok(q) => {
                        assert_eq!(q.seq, next, "quotes arrive once each, in order");
                        next += 1;
                        received += 1;
                        sum += q.price;
                    }
                    Err(RecvError::Disconnected) => break,
                    Err(e) => return Err(e.into()),
                },
                line = commands.next_line() => match line? {
                    Some(_) => {
                        asked += 1;
                        writer.write_all(format!("{received}\n").as_bytes()).await?;
                    }
                    None => break,
                },
            }
        }
        drop(writer);
        let answers = client.await??;
        let status = feed.wait()?;
        Ok::<_, Box<dyn std::error::Error>>((received, sum, asked, answers, status))
    });
    let (received, sum, asked, answers, status) = result?;
    println!("quotes received:   {received} of {QUOTES} (in order, none twice)");
    println!(
        "mean price:        {:.2}",
        sum as f64 / received.max(1) as f64
    );
    println!("control requests:  {asked} served, {answers} answered");
    println!("feed process:      {status}");
    println!("elapsed:           {:.1?}", started.elapsed());
    if received != QUOTES {
        return Err(format!("expected {QUOTES} quotes, received {received}").into());
    }
    Ok(())
}
