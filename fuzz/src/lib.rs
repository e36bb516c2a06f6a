//! The fuzz harness: entry points for the fuzz targets in `fuzz_targets/` and for
//! the test that replays their seed corpus (`tests/fuzz_seeds.rs`, which the
//! library's unit tests include on stable). Each runs one parser of
//! attacker-controlled bytes, and what consumes its output, on arbitrary input. They never unwrap on the
//! input: a panic here is a bug in the code under test (or a broken contract that
//! the assertions below check). Not a stable API.
//!
//! The fixed edge config and token issuer are made once per process: generating
//! the RSA key takes far longer than a fuzz iteration.

use std::future::{Future, poll_fn};
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use tunnel::fuzz_api::bridge::{
    self, BridgeError, Decoder, Event, Options, Role, Stats, WebSocket,
};
use tunnel::fuzz_api::target::{self, AppUrl, Credentials, Target};
use tunnel::fuzz_api::{Config, Issuer, Secret, dial, frame as codec, policy, server};
use tunnel::{exit, protocol};

/// The edge config every target checks requests against: an app with an origin,
/// a bastion app with destinations, and a service token (the one in
/// `tests/fixtures/cloudflared-service-token.http`).
pub const EDGE_TOML: &str = r#"
listen = "127.0.0.1:0"
auth_domain = "auth.example.test"
[[apps]]
hostname = "db.test"
origin = "127.0.0.1:5432"
allow = ["alice@example.test", "service:ci"]
[[apps]]
hostname = "*.ssh.test"
destinations = ["10.0.0.1:22", "bastion.ssh.test:22"]
allow = ["service:ci"]
[[service_tokens]]
name = "ci"
client_id = "ci.access"
client_secret = "s3cret"
"#;

/// The hostname the client-side targets dial.
const CLIENT_HOST: &str = "db.test";
/// The access token the client holds. Its snowman is a character no header text
/// can carry, so finding it in an error message means the secret leaked.
const CLIENT_TOKEN: &str = "token-\u{2603}";
/// The service-token secret the client holds; likewise never shown.
const CLIENT_SECRET: &str = "secret-\u{2603}";

/// Most request headers the edge accepts (hyper's default).
const MAX_REQUEST_HEADERS: usize = 100;

struct Fixture {
    config: Config,
    issuer: Issuer,
}

/// One client TLS config for every run (building one loads the roots).
fn client_tls() -> Arc<rustls::ClientConfig> {
    static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    TLS.get_or_init(|| tunnel::fuzz_api::client_config(None).expect("the built-in roots load"))
        .clone()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::parse(EDGE_TOML, Path::new(".")).expect("EDGE_TOML is valid");
        // The issuer keeps the key in memory, so the directory can go at once.
        let dir = tempfile::tempdir().expect("a temporary directory for the signing key");
        let issuer =
            Issuer::load_or_create(&dir.path().join("signing-key.pem"), "auth.example.test")
                .expect("a fresh signing key");
        Fixture { config, issuer }
    })
}

/// The edge's view of a handshake: `data` as an HTTP/1.1 request head, through
/// every policy check of every app and the WebSocket accept.
pub fn edge_request(data: &[u8]) {
    let mut raw = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let Some(headers) = header_map(req.headers) else {
        return;
    };
    let f = fixture();
    if let Some(host) = policy::request_host(&headers) {
        let _ = policy::find_app(&f.config.apps, &host);
    }
    let _ = policy::cookie(&headers, protocol::AUTH_COOKIE);
    if let Some(accept) = server::websocket_accept(&headers) {
        // The 101 is built with `expect`: the accept key must be a valid value.
        assert!(HeaderValue::from_str(&accept).is_ok(), "accept {accept:?}");
    }
    for app in &f.config.apps {
        match policy::authorize(&f.config, &f.issuer, app, &headers) {
            policy::Decision::Allow(_) => {}
            policy::Decision::Login(reason) | policy::Decision::Forbidden(reason) => {
                assert_header_line(&reason)
            }
        }
        if let Err(reason) = policy::upstream(app, &headers) {
            assert_header_line(&reason);
        }
    }
}

/// The client's view of a refused handshake: `data` as what the edge answered,
/// parsed by [`dial::parse_response`] and classified for each kind of credentials.
pub fn client_response(data: &[u8]) {
    let base = AppUrl::parse(CLIENT_HOST).expect("CLIENT_HOST is valid");
    let (head, len) = match dial::parse_response(data) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return,
        Err(detail) => {
            // Shown as the dial error, in one line, like every other.
            let message = dial::DialError::Protocol {
                url: base.url(),
                detail,
            }
            .to_string();
            assert!(!message.contains('\n'), "message spans lines: {message:?}");
            return;
        }
    };
    assert!(len <= data.len(), "head of {len} bytes in {}", data.len());
    // As the dialer does: what followed the head is the body.
    let (parts, ()) = head.into_parts();
    let body = (len < data.len()).then(|| data[len..].to_vec());
    let response = http::Response::from_parts(parts, body);
    for credentials in [
        Credentials::None,
        Credentials::Token(Secret::new(CLIENT_TOKEN)),
        Credentials::ServiceToken {
            id: "ci.access".into(),
            secret: Secret::new(CLIENT_SECRET),
        },
    ] {
        let error = dial::classify(base.host(), &credentials, &response);
        let message = error.to_string();
        assert!(!message.contains('\n'), "message spans lines: {message:?}");
        assert!(!message.contains('\u{2603}'), "secret shown: {message:?}");
        let code = error.exit_code();
        assert!(
            [
                exit::LOGIN_NEEDED,
                exit::AUTH_REFUSED,
                exit::ORIGIN,
                exit::EDGE_REFUSED
            ]
            .contains(&code),
            "exit code {code} for {message:?}"
        );
    }
}

/// `data` (lossy UTF-8) as a presented token: the JWT header parser, and the
/// issuer's checks against each app's audience.
pub fn jwt(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let _ = jsonwebtoken::decode_header(token.as_ref());
    let f = fixture();
    for app in &f.config.apps {
        let _ = f.issuer.verify(&token, &app.aud);
    }
}

/// `data` (when UTF-8) as `edge.toml`; a refusal must be one line.
pub fn edge_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = Config::parse(text, Path::new("/tmp")) {
        assert!(!message.contains('\n'), "error spans lines: {message:?}");
    }
}

/// `data` (when UTF-8) as `--hostname`, `--destination`, `-H` and a `host:port` in
/// each mode; a hostname that
/// parses must make a handshake request.
pub fn hostname(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(app) = AppUrl::parse(s) {
        let _ = (app.host_header(), app.addr());
        let target = Target::builder(app, client_tls()).build();
        let _ = dial::handshake_request(&target, None);
    }
    let _ = target::parse_host_port("--destination", s);
    let _ = target::parse_header(s);
    // The one host:port parser: what it accepts, it writes back in a form that
    // parses to the same host and port; what it refuses, it says on one line.
    use protocol::host_port::{self, Port};
    for mode in [Port::Required, Port::Listen, Port::Optional] {
        match host_port::parse("--x", s, mode) {
            Ok(hp) => {
                let again = hp.to_string();
                assert_eq!(
                    host_port::parse("--x", &again, mode),
                    Ok(hp),
                    "{s:?} -> {again:?}"
                );
                if mode != Port::Optional {
                    assert!(hp.port().is_some(), "{s:?} has no port");
                }
            }
            Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
        }
    }
}

/// `data` as the start of a frame, through the header parser alone, as each end
/// and under each size limit: checked against the reference decoder's rules,
/// against its own prefixes, and against the header writer.
pub fn frame_header(data: &[u8]) {
    for us in [Role::Server, Role::Client] {
        for max in [0, 125, bridge::EDGE_MAX_FRAME, u64::MAX] {
            frame_header_as(data, us, max);
        }
    }
}

fn frame_header_as(data: &[u8], us: Role, max: u64) {
    let parsed = codec::parse_header(data, us, max);
    match parsed {
        Ok(Some((header, used))) => {
            assert!(
                used <= data.len() && used <= codec::MAX_HEADER,
                "used {used}"
            );
            assert_eq!(used, ref_header_len(data), "{us:?}: header length");
            assert_eq!(header.len, ref_len(data).expect("a whole header"));
            assert!(
                header.len <= max,
                "{us:?}: {} over the limit {max}",
                header.len
            );
            // The RFC's rules; the tunnel's own (binary only, fragments in order)
            // are the bridge's to enforce, so opcode 1 and 0 may pass here.
            let b0 = data[0];
            assert_eq!(b0 & 0x70, 0, "{us:?}: reserved bits accepted");
            assert_eq!(header.mask.is_some(), us == Role::Server, "{us:?}: masking");
            assert!(
                !header.opcode.is_control() || (header.fin && header.len <= 125),
                "{us:?}: bad control frame accepted"
            );
            // Every prefix of a header is "need more bytes", never an error.
            for cut in 0..used {
                assert!(
                    matches!(codec::parse_header(&data[..cut], us, max), Ok(None)),
                    "{us:?}: a {cut}-byte prefix of a good header is not Ok(None)"
                );
            }
            // What we parse, we write back the same (lengths in their shortest
            // form, which is what the writer picks).
            if let Ok(len) = usize::try_from(header.len) {
                let mut out = [0u8; codec::MAX_HEADER];
                let n = codec::header_len(len, header.mask.is_some());
                codec::write_header(&mut out[..n], header.opcode, header.mask, len);
                let again = codec::parse_header(&out[..n], us, max)
                    .expect("a written header parses")
                    .expect("a written header is whole");
                let written = (again.0.opcode, again.0.mask, again.0.len, again.1);
                assert_eq!(written, (header.opcode, header.mask, header.len, n));
            }
        }
        Ok(None) => assert!(
            data.len() < ref_header_len(data),
            "{us:?}: more bytes asked for after a whole header"
        ),
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "message spans lines: {message:?}");
            assert!(
                ref_breaks_rfc(data, us, max),
                "{us:?}: refused a good header: {e}"
            );
        }
    }
}

/// Bytes in the header that starts `data` (2 until the second byte arrives).
fn ref_header_len(data: &[u8]) -> usize {
    match data {
        [_, b1, ..] => {
            let ext = match b1 & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
        }
        _ => 2,
    }
}

/// [`ref_breaks_rules`] without the tunnel's own rules: RFC 6455 section 5 alone.
fn ref_breaks_rfc(header: &[u8], us: Role, max: u64) -> bool {
    let [b0, b1, ..] = *header else {
        return false;
    };
    let opcode = b0 & 0x0f;
    let control = opcode >= 8;
    b0 & 0x70 != 0
        || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10)
        || (b1 & 0x80 != 0) != (us == Role::Server)
        || (control && b0 & 0x80 == 0)
        || ref_len(header).is_some_and(|len| len > max || (control && len > 125))
}

/// `data` (after a first byte that picks a read size) as a peer's byte stream
/// through the bridge's sans-IO frame decoder alone, as each end: the events and
/// the error, if any, must not depend on how reads split the stream, the decoder
/// never ends the stream itself, and what it hands out never exceeds what came in.
pub fn frame_decoder(data: &[u8]) {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(pick % 17) + 1;
    for us in [Role::Server, Role::Client] {
        let whole = decode_in_reads(stream, us, stream.len().max(1));
        let pieces = decode_in_reads(stream, us, step);
        assert_eq!(
            whole, pieces,
            "{us:?}: reads of {step} bytes decode otherwise"
        );
    }
}

/// What the decoder made of `stream` arriving `step` bytes per read: its events
/// (adjacent payload pieces joined), the error that stopped it, and how many
/// bytes it consumed.
fn decode_in_reads(stream: &[u8], us: Role, step: usize) -> (Vec<Event>, Option<String>, usize) {
    let mut decoder = Decoder::new(us, bridge::EDGE_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut events: Vec<Event> = Vec::new();
    let mut fed = 0;
    let mut handed_out = 0;
    for chunk in stream.chunks(step) {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let event = match decoder.decode(&mut buf) {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => return (events, Some(e.to_string()), fed - buf.len()),
            };
            match (&event, events.last_mut()) {
                (Event::Data(piece), Some(Event::Data(joined))) => {
                    handed_out += piece.len();
                    joined.extend_from_slice(piece);
                    continue;
                }
                (Event::Data(b) | Event::Control(_, b), _) => handed_out += b.len(),
                (Event::Eof, _) => panic!("{us:?}: the decoder ended the stream"),
                (Event::EmptyMessage, _) => {}
            }
            events.push(event);
        }
        assert!(
            handed_out + buf.len() <= fed,
            "{us:?}: {handed_out} bytes handed out of {fed}"
        );
    }
    (events, None, fed - buf.len())
}

/// `data` as the byte stream a WebSocket peer sends, pumped by [`bridge::run`] as
/// the edge (frames must be masked) and as the client, each against a local app
/// and a peer on in-memory pipes, and checked against an independent reference decoder.
pub fn frame(data: &[u8]) {
    for run in FRAME_RUNS {
        frame_run(data, run);
    }
}

/// One way of running the bridge on a fuzz input.
struct FrameRun {
    /// Which end the bridge plays.
    role: Role,
    /// The local app shuts its write side at once (else after reading everything).
    local_eof_first: bool,
    /// `Options::peer_half_close`.
    peer_half_close: bool,
    /// Capacity of both pipes: small ones split reads and writes at odd places.
    pipe: usize,
    /// Hand the first third of the input over as bytes the handshake read ahead.
    buffered: bool,
    /// `WebSocket::with_clean_eof`: the stream's end is authenticated (TLS).
    clean_eof: bool,
}

const FRAME_RUNS: &[FrameRun] = &[
    FrameRun {
        role: Role::Server,
        local_eof_first: false,
        peer_half_close: true,
        pipe: 64 * 1024,
        buffered: false,
        clean_eof: false,
    },
    FrameRun {
        role: Role::Client,
        local_eof_first: false,
        peer_half_close: false,
        pipe: 64 * 1024,
        buffered: true,
        clean_eof: true,
    },
    FrameRun {
        role: Role::Server,
        local_eof_first: true,
        peer_half_close: false,
        pipe: 61,
        buffered: true,
        clean_eof: true,
    },
    FrameRun {
        role: Role::Client,
        local_eof_first: true,
        peer_half_close: true,
        pipe: 7,
        buffered: false,
        clean_eof: false,
    },
];

fn frame_run(data: &[u8], run: &FrameRun) {
    let max = match run.role {
        Role::Server => bridge::EDGE_MAX_FRAME,
        Role::Client => bridge::CLIENT_MAX_FRAME,
    };
    let expect = Reference::decode(data, run.role, max, true);
    let Some((result, got, sent)) = drive(data, run, max) else {
        panic!(
            "{:?} bridge hangs: waits for a timer with its input all read ({:?})",
            run.role, expect.end
        );
    };
    check_local(run, &expect, &result, &got);
    // After the half-close marker the peer may still ping (its stream to us ended,
    // not the connection), and the bridge answers: the pings it may answer are all
    // those before a close, past the marker too.
    let pinged = Reference::decode(data, run.role, max, false).pings;
    check_sent(run, &expect, &pinged, &result, &sent);
}

/// The bridge as `run.role`, fed `data` by a peer, against a local app, on pipes;
/// `None` when it stalls. Returns its outcome, what the app got and what the
/// peer got back.
fn drive(data: &[u8], run: &FrameRun, max: u64) -> Option<Outcome> {
    let split = if run.buffered { data.len() / 3 } else { 0 };
    let (ours, peer) = duplex(run.pipe);
    let (local, app) = duplex(run.pipe);
    let ws = WebSocket::new(ours, run.role, max)
        .with_buffered(BytesMut::from(&data[..split]))
        .with_clean_eof(run.clean_eof);
    let opts = Options {
        peer_half_close: run.peer_half_close,
        ..Options::default()
    };
    let rest = &data[split..];
    let peer = async move {
        let (mut rd, mut wr) = tokio::io::split(peer);
        let write = async {
            // The bridge may stop reading (an error, a close): the rest is lost.
            let _ = wr.write_all(rest).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut got = Vec::new();
            let _ = rd.read_to_end(&mut got).await;
            got
        };
        tokio::join!(write, read).1
    };
    let early = run.local_eof_first;
    let app = async move {
        let mut app = app;
        if early {
            let _ = app.shutdown().await;
        }
        let mut got = Vec::new();
        let _ = app.read_to_end(&mut got).await;
        if !early {
            let _ = app.shutdown().await;
        }
        got
    };
    let all = async { tokio::join!(bridge::run(local, ws, opts), app, peer) };
    run_until_stalled(all)
}

/// The bridge's result, what the local app got, and what the peer got back.
type Outcome = (Result<Stats, BridgeError>, Vec<u8>, Vec<u8>);

/// The local app got exactly the payload, and the result is what the reference
/// says the stream's end means.
fn check_local(
    run: &FrameRun,
    expect: &Reference,
    result: &Result<Stats, BridgeError>,
    got: &[u8],
) {
    let role = run.role;
    // An authenticated end between two messages is the peer closing, not a cut.
    let clean_end = run.clean_eof && expect.end == RefEnd::Eof && !expect.mid_message;
    // The local app sees exactly the payload, in order, whatever the outcome.
    assert!(
        got == expect.data,
        "{role:?}: local got {} bytes, reference {} ({:?}, {result:?})",
        got.len(),
        expect.data.len(),
        expect.end
    );
    match result {
        Ok(stats) => {
            assert!(
                clean_end
                    || !matches!(
                        expect.end,
                        RefEnd::Violation { definite: true } | RefEnd::Eof | RefEnd::Truncated
                    ),
                "{role:?}: accepted a stream the reference refuses or calls cut off ({:?}, {stats:?})",
                expect.end
            );
            assert_eq!(
                *stats,
                Stats {
                    up: 0,
                    down: got.len() as u64
                },
                "{role:?}"
            );
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "message spans lines: {message:?}");
            let framing = matches!(
                e,
                BridgeError::Frame(_) | BridgeError::TextFrame | BridgeError::Fragmentation
            );
            let cut = matches!(e, BridgeError::Truncated(_));
            let expected = match expect.end {
                RefEnd::Violation { definite: true } => framing,
                // Cut off inside the offending header: either reading is right.
                RefEnd::Violation { definite: false } => framing || cut,
                RefEnd::Eof => cut && !clean_end,
                RefEnd::Truncated => cut,
                RefEnd::Close(_) | RefEnd::Marker => false,
            };
            assert!(
                expected,
                "{role:?}: error {message:?} where the reference says {:?}",
                expect.end
            );
        }
    }
}

/// What the bridge sent back is well framed for the other end, and answers only
/// what it was sent.
fn check_sent(
    run: &FrameRun,
    expect: &Reference,
    pinged: &[Vec<u8>],
    result: &Result<Stats, BridgeError>,
    sent: &[u8],
) {
    let role = run.role;
    // What the bridge sent back must be well framed for the other end.
    let peer_role = match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let back = Reference::decode(sent, peer_role, u64::MAX, false);
    // A failed connection is dropped, maybe in the middle of a frame.
    let cut_ok = result.is_err() && back.end == RefEnd::Truncated;
    assert!(
        (matches!(back.end, RefEnd::Eof | RefEnd::Close(_)) || cut_ok) && back.used == sent.len(),
        "{role:?}: sent bad frames ({:?}, or bytes after a close): {sent:?}",
        back.end
    );
    assert!(
        back.data.is_empty() && back.partial.is_none(),
        "{role:?}: sent data it never read"
    );
    assert!(back.pings.is_empty(), "{role:?}: pinged without a timer");
    // Pongs answer pings, the latest one when several wait (RFC 6455 5.5.3).
    let mut pings = pinged.iter();
    for pong in &back.pongs {
        assert!(
            pings.any(|p| p == pong),
            "{role:?}: pong {pong:?} answers no ping"
        );
    }
    assert!(back.markers <= 1, "{role:?}: sent EOF twice");
    assert!(
        back.markers == 0 || run.peer_half_close,
        "{role:?}: sent the half-close marker to a peer that does not know it"
    );
    if let Some(close) = &back.close {
        // Our close is the last frame, and carries no code or the peer's.
        let echo = match &expect.end {
            RefEnd::Close(payload) => payload.get(..2).unwrap_or(&[]),
            _ => &[],
        };
        assert!(
            close.is_empty() || close == echo,
            "{role:?}: close payload {close:?}, peer's code {echo:?}"
        );
    }
    if result.is_ok() && matches!(expect.end, RefEnd::Close(_) | RefEnd::Marker) {
        assert!(
            back.close.is_some(),
            "{role:?}: ended after {:?} without a close frame",
            expect.end
        );
    }
}

/// Run `fut` on this thread's runtime without ever letting time pass: poll it
/// until it is done (`Some`), or until nothing it waits on can wake it but a timer
/// (`None`). The pipes are in memory, so every wake-up happens inside a poll and
/// a round with none means the future is stuck. The runtime's clock never runs
/// (the future never yields to it), so the outcome cannot depend on speed.
fn run_until_stalled<F: Future>(fut: F) -> Option<F::Output> {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    struct Woken(AtomicBool);
    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let woken = Arc::new(Woken(AtomicBool::new(false)));
    let waker = Waker::from(woken.clone());
    let mut fut = pin!(fut);
    let drive = poll_fn(|_| {
        let mut cx = Context::from_waker(&waker);
        // A bound far above any input's needs: more rounds than this is a livelock.
        for _ in 0..1_000_000 {
            woken.0.store(false, Ordering::Relaxed);
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return Poll::Ready(Some(out));
            }
            if !woken.0.load(Ordering::Relaxed) {
                return Poll::Ready(None);
            }
        }
        panic!("no end after a million rounds of wake-ups: a livelock");
    });
    // Unconstrained: tokio's cooperative budget would otherwise make the pipes
    // return `Pending` (and wake) forever inside this one poll.
    RUNTIME.with(|rt| rt.block_on(tokio::task::unconstrained(drive)))
}

/// How the reference decoder's input ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RefEnd {
    /// A close frame, with this payload.
    Close(Vec<u8>),
    /// An empty binary message: the peer's EOF.
    Marker,
    /// The bytes ran out between frames.
    Eof,
    /// The bytes ran out inside a frame.
    Truncated,
    /// A frame broke RFC 6455 or the tunnel protocol. `definite` when its whole
    /// header arrived; otherwise the stream ended inside the offending header,
    /// and giving up or calling it EOF are both right.
    Violation {
        /// The whole header arrived.
        definite: bool,
    },
}

/// A WebSocket byte stream decoded by the book, one byte at a time, independently
/// of `frame`: what the bridge must make of it.
#[derive(Debug)]
struct Reference {
    /// Binary payload bytes, unmasked, in order, up to where reading stops.
    data: Vec<u8>,
    /// Payload bytes of a data frame the stream ended inside.
    partial: Option<usize>,
    /// Each ping's payload.
    pings: Vec<Vec<u8>>,
    /// Each pong's payload.
    pongs: Vec<Vec<u8>>,
    /// Empty binary messages seen.
    markers: usize,
    /// The close frame's payload.
    close: Option<Vec<u8>>,
    /// Why decoding stopped.
    end: RefEnd,
    /// The bytes ran out inside a fragmented message (between two of its frames).
    mid_message: bool,
    /// Bytes decoded, up to where decoding stopped.
    used: usize,
}

impl Reference {
    /// Decode `data` as received by `us`, refusing frames longer than `max`;
    /// reading stops at a close frame, and at an empty message if `stop_at_marker`.
    fn decode(data: &[u8], us: Role, max: u64, stop_at_marker: bool) -> Reference {
        let mut r = Reference {
            data: Vec::new(),
            partial: None,
            pings: Vec::new(),
            pongs: Vec::new(),
            markers: 0,
            close: None,
            end: RefEnd::Eof,
            mid_message: false,
            used: 0,
        };
        let mut bytes = data.iter().copied();
        // Inside a fragmented message, and how many bytes it has carried so far.
        let mut in_message = false;
        let mut message_len = 0u64;
        loop {
            let header = match ref_header(&mut bytes, &mut r.used) {
                Ok(header) => header,
                Err(partial) => {
                    r.mid_message = in_message;
                    r.end = if partial.is_empty() {
                        RefEnd::Eof
                    } else if ref_breaks_rules(&partial, us, max, in_message) {
                        RefEnd::Violation { definite: false }
                    } else {
                        RefEnd::Truncated
                    };
                    return r;
                }
            };
            if ref_breaks_rules(&header, us, max, in_message) {
                r.end = RefEnd::Violation { definite: true };
                return r;
            }
            let fin = header[0] & 0x80 != 0;
            let opcode = header[0] & 0x0f;
            let len = ref_len(&header).expect("a whole header");
            let key = (header[1] & 0x80 != 0).then(|| {
                let k = &header[header.len() - 4..];
                [k[0], k[1], k[2], k[3]]
            });
            // The payload, unmasked byte by byte.
            let payload = match ref_payload(&mut bytes, &mut r.used, len, key) {
                Ok(payload) => payload,
                Err(partial) => {
                    if opcode < 8 {
                        r.data.extend_from_slice(&partial);
                        r.partial = Some(partial.len());
                    }
                    r.end = RefEnd::Truncated;
                    return r;
                }
            };
            match opcode {
                8 => {
                    r.close = Some(payload.clone());
                    r.end = RefEnd::Close(payload);
                    return r;
                }
                9 => r.pings.push(payload),
                10 => r.pongs.push(payload),
                _ => {
                    r.data.extend_from_slice(&payload);
                    in_message = !fin;
                    message_len += len;
                    if fin {
                        if message_len == 0 {
                            r.markers += 1;
                            if stop_at_marker {
                                r.end = RefEnd::Marker;
                                return r;
                            }
                        }
                        message_len = 0;
                    }
                }
            }
        }
    }
}

/// The next frame header from `bytes`, one byte at a time (the first two say how
/// long the rest is), counting bytes taken in `used`; `Err` with what arrived when
/// the bytes ran out first.
fn ref_header(bytes: &mut impl Iterator<Item = u8>, used: &mut usize) -> Result<Vec<u8>, Vec<u8>> {
    let mut header = Vec::with_capacity(14);
    while header.len() < ref_header_len(&header) {
        let Some(b) = bytes.next() else {
            return Err(header);
        };
        *used += 1;
        header.push(b);
    }
    Ok(header)
}

/// A payload of `len` bytes from `bytes`, unmasked with `key` byte by byte,
/// counting bytes taken in `used`; `Err` with what arrived when the bytes ran out.
fn ref_payload(
    bytes: &mut impl Iterator<Item = u8>,
    used: &mut usize,
    len: u64,
    key: Option<[u8; 4]>,
) -> Result<Vec<u8>, Vec<u8>> {
    let mut payload = Vec::new();
    let mut i = 0u64;
    while i < len {
        let Some(b) = bytes.next() else {
            return Err(payload);
        };
        *used += 1;
        payload.push(b ^ key.map_or(0, |k| k[(i % 4) as usize]));
        i += 1;
    }
    Ok(payload)
}

/// A frame's payload length, once the header bytes that carry it have arrived.
fn ref_len(header: &[u8]) -> Option<u64> {
    let b1 = *header.get(1)?;
    Some(match b1 & 0x7f {
        126 => u64::from(u16::from_be_bytes(header.get(2..4)?.try_into().ok()?)),
        127 => u64::from_be_bytes(header.get(2..10)?.try_into().ok()?),
        n => u64::from(n),
    })
}

/// Whether the start of a header already breaks a rule of RFC 6455 section 5 or
/// of the tunnel protocol, as received by `us` (`in_message`: a fragmented
/// message is open).
fn ref_breaks_rules(header: &[u8], us: Role, max: u64, in_message: bool) -> bool {
    let [b0, b1, ..] = *header else {
        return false;
    };
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    let control = opcode >= 8;
    let masked = b1 & 0x80 != 0;
    let bad = b0 & 0x70 != 0 // no extension negotiated, so no RSV bit
        || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10)
        || masked != (us == Role::Server) // clients mask, servers don't
        || (control && !fin)
        || opcode == 1 // tunnels carry binary messages only
        || (opcode == 0 && !in_message)
        || (opcode == 2 && in_message);
    bad || ref_len(header).is_some_and(|len| len > max || (control && len > 125))
}

/// Headers as hyper and tungstenite build them: any name or value `http` refuses
/// fails the whole head.
fn header_map(raw: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(raw.len());
    for h in raw {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        map.append(name, value);
    }
    Some(map)
}

/// Refusal reasons travel in the `Tunnel-Refusal` header and one log line.
fn assert_header_line(reason: &str) {
    assert!(
        HeaderValue::from_str(reason).is_ok() && !reason.contains('\n'),
        "reason is not one header line: {reason:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_decodes_rfc6455_examples() {
        // Section 5.7: a masked "Hello", as a server receives it.
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let text = Reference::decode(&masked, Role::Server, 1 << 20, true);
        assert_eq!(text.end, RefEnd::Violation { definite: true });
        let mut binary = masked;
        binary[0] = 0x82;
        let r = Reference::decode(&binary, Role::Server, 1 << 20, true);
        assert_eq!(
            (&r.data[..], &r.end, r.used),
            (&b"Hello"[..], &RefEnd::Eof, 11)
        );
        // A client must refuse it: servers do not mask.
        let r = Reference::decode(&binary, Role::Client, 1 << 20, true);
        assert_eq!(r.end, RefEnd::Violation { definite: true });
        // A fragmented unmasked message, a ping inside it, then a close with a code.
        let stream = [
            0x02, 0x03, b'H', b'e', b'l', 0x89, 0x01, b'p', 0x80, 0x02, b'l', b'o', 0x88, 0x02,
            0x03, 0xe8,
        ];
        let r = Reference::decode(&stream, Role::Client, 1 << 20, true);
        assert_eq!(r.data, b"Hello");
        assert_eq!(r.pings, [b"p".to_vec()]);
        assert_eq!(r.end, RefEnd::Close(vec![0x03, 0xe8]));
        // Cut inside the ping's header: truncated, not a violation.
        let r = Reference::decode(&stream[..6], Role::Client, 1 << 20, true);
        assert_eq!((&r.data[..], &r.end), (&b"Hel"[..], &RefEnd::Truncated));
        // An empty message ends reading; a too-long frame is refused on its length.
        let r = Reference::decode(&[0x82, 0x00, 0x82, 0x01, 1], Role::Client, 1, true);
        assert_eq!((r.end, r.markers, r.used), (RefEnd::Marker, 1, 2));
        let r = Reference::decode(&[0x82, 0x7e, 0x01, 0x00], Role::Client, 255, true);
        assert_eq!(r.end, RefEnd::Violation { definite: true });
    }

    #[test]
    fn a_stall_is_told_from_progress() {
        let sleep = async { tokio::time::sleep(std::time::Duration::from_millis(1)).await };
        assert!(run_until_stalled(sleep).is_none());
        let echo = async {
            let (mut a, mut b) = duplex(3);
            let write = async {
                a.write_all(b"through a tiny pipe").await.unwrap();
                drop(a);
            };
            let mut got = Vec::new();
            tokio::join!(write, b.read_to_end(&mut got)).1.unwrap();
            got
        };
        assert_eq!(run_until_stalled(echo).unwrap(), b"through a tiny pipe");
    }

    #[test]
    fn bridge_agrees_on_a_plain_stream() {
        frame(&[0x82, 0x02, b'h', b'i', 0x88, 0x00]);
        let mut masked = vec![0x82, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        masked.extend_from_slice(&[0x88, 0x80, 9, 9, 9, 9]);
        frame(&masked);
    }
}
