//! A market-data pipeline across processes: feed -> strategies -> order gateway.
//!
//! ```sh
//! cargo run --release --example market_data              # 2 strategies, 100,000 quotes, 2 s
//! cargo run --release --example market_data -- 3 500000
//! ```
//!
//! - The feed handler (this process) publishes quotes through a broadcast ring: every
//!   strategy receives every quote, read straight out of the ring, and a slow strategy
//!   is lapped (told how many it lost) rather than slowing the feed.
//! - Each strategy process watches the quotes and, on every 50th, sends an order to the
//!   gateway as a request/response call (the request through the service's MPMC request
//!   ring, the acknowledgement back in the call's own slot), and waits for the ack.
//! - The gateway process acknowledges each order and measures tick-to-order latency:
//!   from the moment the feed stamped the quote to the moment the gateway holds the
//!   order, on the one monotonic clock every process of the machine reads.
//!
//! At the end the gateway prints the latency percentiles and each strategy its counts.
//! Four processes share the machine's cores here, and the strategies spin then park
//! (the default wait strategy): the figures include wake-ups. Pin each process to a core
//! of its own to see the busy-polling figures.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shm_transport::ring::request_response::{self, CallError};
use shm_transport::ring::{OpenMode, broadcast};

/// A quote, stamped by the feed with the monotonic clock (ns).
#[shm_transport::message(name = "examples::market_data::Quote/v1")]
#[derive(Clone, Copy, Debug)]
struct Quote {
    seq: u64,
    instrument: u32,
    side: u32,
    price: i64,
    quantity: u64,
    stamped_ns: u64,
}

/// An order sent on a quote; `last` 1 says the strategy is done.
#[shm_transport::message(name = "examples::market_data::Order/v1")]
#[derive(Clone, Copy, Debug)]
struct Order {
    strategy: u32,
    last: u32,
    quote_seq: u64,
    quote_stamped_ns: u64,
    price: i64,
    quantity: u64,
}

/// The gateway's acknowledgement.
#[shm_transport::message(name = "examples::market_data::Ack/v1")]
#[derive(Clone, Copy, Debug)]
struct Ack {
    order_id: u64,
    accepted: u64,
}

/// The monotonic clock in ns: the same clock in every process of the machine.
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Every how many quotes a strategy sends an order.
const ORDER_EVERY: u64 = 50;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("strategy") => return strategy(&args[1], args[2].parse()?),
        Some("gateway") => return gateway(&args[1], args[2].parse()?),
        _ => {}
    }
    let strategies: u32 = args.first().map_or(Ok(2), |a| a.parse())?;
    let quotes: u64 = args.get(1).map_or(Ok(100_000), |a| a.parse())?;
    feed(strategies, quotes)
}

/// The names of this run's rings: the quotes, the order service.
fn names(base: &str) -> (String, String) {
    (format!("{base}-quotes"), format!("{base}-orders"))
}

/// The order service: its creator sets the limits, the others open what it made.
fn service(name: &str) -> request_response::Builder<Order, Ack> {
    request_response::Builder::new(name)
}

/// The feed handler: starts the gateway and the strategies, publishes the quotes.
fn feed(strategies: u32, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let base = format!("market-data-{}", std::process::id());
    let (quotes, orders) = names(&base);
    let mut publisher = broadcast::Builder::<Quote>::new(quotes.as_str())
        .capacity(4096)
        .subscribers(strategies)
        .mode(OpenMode::Create)
        .publisher()?;
    // The service exists before anyone attaches to it.
    drop(
        service(&orders)
            .clients(strategies)
            .workers(1)
            .capacity(256)
            .mode(OpenMode::Create)
            .server()?,
    );
    let exe = std::env::current_exe()?;
    let mut gateway = Command::new(&exe)
        .args(["gateway", &base, &strategies.to_string()])
        .spawn()?;
    let mut children: Vec<Child> = (0..strategies)
        .map(|s| {
            Command::new(&exe)
                .args(["strategy", &base, &s.to_string()])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    // Publish once every strategy listens and the gateway serves (its worker role, 0,
    // is held): a call that finds no live worker fails with `ServerGone`.
    let gateway_serves = || {
        shm_transport::alloc::Segment::survey(&orders.as_str().into())
            .is_ok_and(|s| s.live_roles.contains(&0))
    };
    let ready_by = Instant::now() + Duration::from_secs(30);
    while publisher.stats().subscribers < strategies || !gateway_serves() {
        if Instant::now() > ready_by {
            return Err("the strategies or the gateway did not attach".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    for seq in 0..count {
        publisher.send(Quote {
            seq,
            instrument: (seq % 16) as u32,
            side: (seq % 2) as u32,
            price: 10_000 + (seq % 97) as i64,
            quantity: 100,
            stamped_ns: now_ns(),
        })?;
        // About 50,000 quotes a second: a paced feed, not a flood. Yield while waiting:
        // the strategies and the gateway share the machine's cores with the feed.
        let due = started + Duration::from_micros(20 * (seq + 1));
        while Instant::now() < due {
            std::thread::yield_now();
        }
    }
    drop(publisher); // the strategies see the feed end
    let mut failed = false;
    for mut child in children.drain(..) {
        failed |= !child.wait()?.success();
    }
    failed |= !gateway.wait()?.success();
    println!(
        "feed:        {count} quotes to {strategies} strategies in {:.1?}",
        started.elapsed()
    );
    for name in [&quotes, &orders, &format!("{orders}.requests")] {
        shm_transport::alloc::Segment::remove(&name.as_str().into())?;
    }
    if failed {
        return Err("a process failed".into());
    }
    Ok(())
}

/// A strategy: an order on every `ORDER_EVERY`th quote, a call it waits on.
fn strategy(base: &str, me: u32) -> Result<(), Box<dyn std::error::Error>> {
    let (quotes, orders) = names(base);
    let mut quotes = broadcast::Builder::<Quote>::new(quotes.as_str())
        .mode(OpenMode::Open)
        .subscriber()?;
    let gateway = service(&orders).mode(OpenMode::Open).client()?;
    let (mut seen, mut lost, mut acked) = (0u64, 0u64, 0u64);
    let order = |quote: &Quote, last: u32| Order {
        strategy: me,
        last,
        quote_seq: quote.seq,
        quote_stamped_ns: quote.stamped_ns,
        price: quote.price,
        quantity: quote.quantity,
    };
    let mut previous = None;
    loop {
        let quote = match quotes.recv() {
            Ok(quote) => quote,
            Err(broadcast::RecvError::Lagged { missed }) => {
                lost += missed;
                continue;
            }
            Err(broadcast::RecvError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        };
        seen += 1;
        if quote.seq % ORDER_EVERY == u64::from(me) {
            let ack = gateway.call(&order(&quote, 0), None)?;
            acked += ack.accepted;
        }
        previous = Some(quote);
    }
    let last = previous.ok_or("the feed sent nothing")?;
    match gateway.call(&order(&last, 1), None) {
        Ok(_) | Err(CallError::ServerGone) => {}
        Err(e) => return Err(e.into()),
    }
    println!("strategy {me}:  {seen} quotes seen, {lost} lost to laps, {acked} orders acked");
    Ok(())
}

/// The gateway: acknowledges every order, measures tick-to-order latency, ends once
/// every strategy said it is done.
fn gateway(base: &str, strategies: u32) -> Result<(), Box<dyn std::error::Error>> {
    let (_, orders) = names(base);
    let mut server = service(&orders).mode(OpenMode::Open).server()?;
    let mut latency = Histogram::<u64>::new(3)?;
    let (mut done, mut order_id) = (0u32, 0u64);
    while done < strategies {
        let request = server.recv_deadline(Some(Instant::now() + Duration::from_secs(30)))?;
        let held_ns = now_ns();
        if request.last == 1 {
            done += 1;
        } else {
            latency.record(held_ns.saturating_sub(request.quote_stamped_ns))?;
        }
        order_id += 1;
        request.respond(&Ack {
            order_id,
            accepted: 1,
        });
    }
    let us = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "gateway:     {} orders; tick-to-order latency p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        latency.len(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        latency.max() as f64 / 1000.0
    );
    Ok(())
}
