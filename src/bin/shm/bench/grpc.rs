//! `grpc`: gRPC unary calls (tonic, HTTP/2 over a Unix socket), the RPC users pick today,
//! as one more round trip next to `shm-rpc`. The message is one `bytes` field of the
//! payload size and the sequence number (hand-written prost messages, so no `protoc`
//! is needed); the server answers each call with its request. The timing side runs a
//! current-thread tokio runtime and blocks on each call; the echo side serves on a
//! runtime of its own thread for as long as its process lives, and reports each stop
//! message's count of calls to `echo`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::task::{Context, Poll};

use anyhow::{Result, anyhow};
use shm_transport::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tonic::codegen::{BoxFuture, StdError};

use super::transport::{Echoer, Pinger, STOP};

/// The request and the response: a sequence number and the payload.
#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(bytes = "vec", tag = "2")]
    body: Vec<u8>,
}

const METHOD: &str = "/shm.bench.Echo/Call";

/// The service: answers each call with its request, counts calls, and reports the count
/// at each stop message.
#[derive(Clone)]
struct Echo {
    calls: std::sync::Arc<AtomicU64>,
    stops: mpsc::Sender<u64>,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "shm.bench.Echo";
}

struct Call(Echo);

impl tonic::server::UnaryService<Payload> for Call {
    type Response = Payload;
    type Future = BoxFuture<tonic::Response<Payload>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Payload>) -> Self::Future {
        let request = request.into_inner();
        if request.seq == STOP {
            // Relaxed: a count handed over through the channel, which synchronises.
            let _ = self.0.stops.send(self.0.calls.swap(0, Relaxed));
        } else {
            // Relaxed: as above.
            self.0.calls.fetch_add(1, Relaxed);
        }
        Box::pin(async move { Ok(tonic::Response::new(request)) })
    }
}

impl<B> tower::Service<http::Request<B>> for Echo
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call(self.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(call, request).await)
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The echo side: the server, on a thread of its own.
pub struct GrpcEchoer {
    stops: mpsc::Receiver<u64>,
}

/// Binds the Unix socket at `path` and serves on it until this process exits.
pub fn echoer(path: &Path) -> Result<Box<dyn Echoer>> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    let (stops, receiver) = mpsc::channel();
    let echo = Echo {
        calls: Default::default(),
        stops,
    };
    std::thread::Builder::new()
        .name("grpc-server".into())
        .spawn(move || -> Result<()> {
            runtime()?.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener)?;
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                tonic::transport::Server::builder()
                    .add_service(echo)
                    .serve_with_incoming(incoming)
                    .await?;
                Ok(())
            })
        })?;
    Ok(Box::new(GrpcEchoer { stops: receiver }))
}

impl Echoer for GrpcEchoer {
    fn echo(&mut self) -> Result<u64> {
        self.stops
            .recv()
            .map_err(|_| anyhow!("the gRPC server stopped"))
    }
}

/// The timing side: a client.
pub struct GrpcPinger {
    runtime: tokio::runtime::Runtime,
    client: tonic::client::Grpc<tonic::transport::Channel>,
    body: Vec<u8>,
}

/// Connects to the server at `path`, sending `size`-byte payloads.
pub fn pinger(path: &Path, size: usize) -> Result<Box<dyn Pinger>> {
    let runtime = runtime()?;
    let path = PathBuf::from(path);
    let channel = runtime.block_on(async move {
        // The URI is required and unused: the connector dials the socket.
        tonic::transport::Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
    })?;
    Ok(Box::new(GrpcPinger {
        runtime,
        client: tonic::client::Grpc::new(channel),
        body: vec![0x5a; size],
    }))
}

impl Pinger for GrpcPinger {
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        let request = Payload {
            seq,
            body: self.body.clone(),
        };
        let client = &mut self.client;
        self.runtime.block_on(async move {
            client.ready().await?;
            let response: tonic::Response<Payload> = client
                .unary(
                    tonic::Request::new(request),
                    http::uri::PathAndQuery::from_static(METHOD),
                    tonic_prost::ProstCodec::default(),
                )
                .await?;
            Ok(response.into_inner().seq)
        })
    }
}
