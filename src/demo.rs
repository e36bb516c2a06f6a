//! `tunnel demo`, the embedded default: a loopback edge, an echo origin and a
//! `tcp` listener in one process, wired together with a fresh service token; then a
//! round trip through them proves the path works. Uses the same entry points as the
//! real commands ([`crate::edge::serve`], [`crate::client::listen::serve`]).

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::DemoArgs;
use crate::client::target::AppUrl;
use crate::client::{Credentials, Target, listen};
use crate::edge::{Config, Edge};
use crate::error::Error;
use crate::secret::Secret;
use crate::shutdown::GRACE;

/// How long the demo waits for its round trip.
pub const DEMO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run the demo until `shutdown` (or right after the round trip with `--once`).
pub async fn run(
    args: &DemoArgs,
    shutdown: CancellationToken,
    console: &mut crate::console::Console,
) -> Result<(), Error> {
    let io = |what: &str, e: std::io::Error| Error::Io(format!("demo: {what}: {e}"));
    // The flags first: a bad --url fails before anything is started.
    let listeners = listen::bind(std::slice::from_ref(&args.url)).await?;
    let dir = tempfile::Builder::new()
        .prefix("tunnel-demo-")
        .tempdir()
        .map_err(|e| io("temp dir", e))?;

    let origin = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| io("origin", e))?;
    let origin_addr = origin.local_addr().map_err(|e| io("origin", e))?;
    tokio::spawn(echo(origin));

    let (edge_addr, secret) = start_edge(origin_addr, dir.path(), &shutdown).await?;

    let target = Target::builder(
        AppUrl::parse("http://demo.tunnel.test")?,
        crate::tls::client_config(None)?,
    )
    .connect_to(Some(edge_addr.to_string()))
    .credentials(Credentials::ServiceToken {
        id: "demo.access".into(),
        secret: Secret::new(secret),
    })
    .build();
    let local = listeners[0].local_addr().map_err(|e| io("listener", e))?;
    let announced = crate::shutdown::announce(&shutdown, crate::shutdown::GRACE);
    let served = tokio::spawn(listen::serve(
        listeners,
        Arc::new(target),
        announced,
        None,
        GRACE,
        crate::bridge::Keepalive::default(),
        None,
    ));

    announce(console, edge_addr, origin_addr, local)?;

    let message = b"hello through the tunnel\n";
    let started = Instant::now();
    let echoed = tokio::time::timeout(DEMO_TIMEOUT, round_trip(local, message))
        .await
        .map_err(|_| Error::Io(format!("demo: no echo within {} s", DEMO_TIMEOUT.as_secs())))?
        .map_err(|e| io("round trip", e))?;
    if echoed != message {
        return Err(Error::Io(
            "demo: the echo differs from what was sent".into(),
        ));
    }
    console.line(format_args!(
        "round trip ok: {} bytes through listener -> edge -> origin and back in {:.1} ms",
        message.len(),
        started.elapsed().as_secs_f64() * 1e3
    ))?;
    if args.once {
        shutdown.cancel();
    } else {
        console.line("serving until Ctrl-C")?;
    }
    let _ = served.await;
    Ok(())
}

/// Start an edge for one app in front of `origin_addr`, its key in `dir`, serving
/// until `shutdown`; returns its address and the demo service token's secret.
async fn start_edge(
    origin_addr: std::net::SocketAddr,
    dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> Result<(std::net::SocketAddr, String), Error> {
    let secret = crate::protocol::random_hex(16);
    let toml = format!(
        r#"listen = "127.0.0.1:0"
auth_domain = "auth.demo.test"
signing_key = "signing-key.pem"
[[apps]]
hostname = "demo.tunnel.test"
origin = "{origin_addr}"
allow = ["service:demo"]
[[service_tokens]]
name = "demo"
client_id = "demo.access"
client_secret = "{secret}"
"#
    );
    let config = Config::parse(&toml, dir).map_err(Error::Io)?;
    let edge = Arc::new(Edge::load(config)?);
    let edge_listener = edge.bind().await?;
    let edge_addr = edge_listener
        .local_addr()
        .map_err(|e| Error::Io(format!("demo: edge: {e}")))?;
    tokio::spawn(crate::edge::serve(
        edge,
        edge_listener,
        shutdown.clone(),
        GRACE,
    ));
    Ok((edge_addr, secret))
}

/// What runs where, and how to try it.
fn announce(
    console: &mut crate::console::Console,
    edge_addr: std::net::SocketAddr,
    origin_addr: std::net::SocketAddr,
    local: std::net::SocketAddr,
) -> Result<(), Error> {
    console.line("tunnel demo: an edge, an echo origin and a tunnel listener, all on loopback")?;
    console.line(format_args!(
        "  edge      http://{edge_addr}  (app demo.tunnel.test, service token demo.access)"
    ))?;
    console.line(format_args!(
        "  origin    {origin_addr}  (echoes what it reads)"
    ))?;
    console.line(format_args!(
        "  listener  {local}  <- connect here, e.g.: nc {} {}",
        local.ip(),
        local.port()
    ))?;
    Ok(())
}

async fn round_trip(addr: std::net::SocketAddr, message: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(message).await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await?;
    Ok(back)
}

async fn echo(listener: TcpListener) {
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}
