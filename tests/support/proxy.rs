//! A recording HTTP proxy for the proxy tests: real sockets on loopback.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;

use super::read_head;

/// An HTTP proxy that records the request line of each connection and carries it
/// to `upstream` (standing in for the proxy's DNS): a `CONNECT` is answered 200 and
/// spliced, any other request (absolute-form, as a client sends plain `http://`
/// requests to a proxy) is passed on as it came.
pub fn recording_proxy(upstream: SocketAddr) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let Some(head) = read_head(&mut client) else {
                    return;
                };
                let text = String::from_utf8_lossy(&head).to_string();
                let line = text.lines().next().unwrap_or("").to_string();
                let _ = tx.send(line.clone());
                let Ok(mut server) = TcpStream::connect(upstream) else {
                    return;
                };
                if line.starts_with("CONNECT ") {
                    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                } else {
                    let _ = server.write_all(&head);
                }
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(Shutdown::Write);
                });
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(Shutdown::Write);
            });
        }
    });
    (url, rx)
}
