//! The client's one HTTP/1 exchange, for the WebSocket upgrade and the proxy
//! `CONNECT` alike: hyper's client connection writes the request and reads the
//! answer; when the answer switches protocols (101, or 2xx to `CONNECT`) hyper hands
//! the stream back with the bytes it read past the head, which the caller must use
//! first (the edge may send frames right behind its 101).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Most response headers the client accepts.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Longest response head the client reads.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The answer to one request.
pub struct Answer<S> {
    /// Status and headers (the body, if any, is not read).
    pub response: Response<()>,
    /// After a switch of protocols: the stream, and what arrived behind the head.
    pub switched: Option<(S, Bytes)>,
}

/// Why an exchange failed, as one line.
#[derive(Debug)]
pub struct ExchangeError(pub String);

/// Send `request` (no body) on `io` and read the answer's head; `peer` names who
/// answers in errors ("the edge", "the proxy").
pub async fn exchange<S>(
    io: S,
    request: Request<()>,
    peer: &'static str,
) -> Result<Answer<S>, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connect = request.method() == Method::CONNECT;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_headers(MAX_RESPONSE_HEADERS)
        .max_header_size(MAX_RESPONSE_HEAD)
        .max_buf_size(MAX_RESPONSE_HEAD)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| describe(e, peer))?;
    // Driven here, not spawned: the exchange is one request long.
    let mut conn = conn.with_upgrades();
    let send = sender.send_request(request.map(|()| Empty::new()));
    tokio::pin!(send);
    let mut conn_done = false;
    let mut response = tokio::select! {
        biased;
        r = &mut send => r.map_err(|e| describe(e, peer))?,
        r = &mut conn => {
            conn_done = true;
            r.map_err(|e| describe(e, peer))?;
            send.await.map_err(|e| describe(e, peer))?
        }
    };
    let status = response.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success());
    if !switching {
        return Ok(Answer {
            response: response.map(|_| ()),
            switched: None,
        });
    }
    let upgraded = if conn_done {
        hyper::upgrade::on(&mut response).await
    } else {
        let (upgraded, done) = tokio::join!(hyper::upgrade::on(&mut response), conn);
        done.map_err(|e| describe(e, peer))?;
        upgraded
    }
    .map_err(|e| describe(e, peer))?;
    let parts = upgraded
        .downcast::<TokioIo<S>>()
        .map_err(|_| ExchangeError("the upgraded stream is not the one dialled".into()))?;
    Ok(Answer {
        response: response.map(|_| ()),
        switched: Some((parts.io.into_inner(), parts.read_buf)),
    })
}

/// hyper's error as the one line the client has always shown for it.
fn describe(e: hyper::Error, peer: &str) -> ExchangeError {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    ExchangeError(if e.is_parse_too_large() {
        format!("response head longer than {MAX_RESPONSE_HEAD} bytes")
    } else if e.is_incomplete_message() {
        format!("{peer} closed the connection before answering")
    } else if e.is_parse() {
        format!("malformed HTTP response: {chain}")
    } else {
        format!("reading the response: {chain}")
    })
}
