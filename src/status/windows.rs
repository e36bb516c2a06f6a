//! Windows: one named pipe per process, `\\.\pipe\tunnel-status-<pid>`, local
//! clients only.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeServer, ServerOptions};

const PREFIX: &str = "tunnel-status-";

pub struct Served;

fn name(pid: u32) -> String {
    format!(r"\\.\pipe\{PREFIX}{pid}")
}

fn server(first: bool) -> std::io::Result<NamedPipeServer> {
    ServerOptions::new()
        .first_pipe_instance(first)
        .reject_remote_clients(true)
        .create(name(std::process::id()))
}

pub struct Listener {
    next: std::sync::Mutex<Option<NamedPipeServer>>,
}

pub fn bind() -> std::io::Result<(Listener, Served)> {
    let s = server(true)?;
    Ok((
        Listener {
            next: std::sync::Mutex::new(Some(s)),
        },
        Served,
    ))
}

pub async fn accept(l: &Listener) -> std::io::Result<NamedPipeServer> {
    let pipe = l.next.lock().unwrap_or_else(|e| e.into_inner()).take();
    let pipe = match pipe {
        Some(p) => p,
        None => server(false)?,
    };
    pipe.connect().await?;
    *l.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(server(false)?);
    Ok(pipe)
}

pub async fn query_all() -> Vec<Result<Vec<u8>, String>> {
    let Ok(entries) = std::fs::read_dir(r"\\.\pipe\") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let path = format!(r"\\.\pipe\{n}");
        match ClientOptions::new().open(&path) {
            Ok(mut c) => {
                let mut doc = Vec::new();
                let r = (&mut c)
                    .take(super::MAX_DOCUMENT as u64)
                    .read_to_end(&mut doc)
                    .await;
                out.push(r.map(|_| doc).map_err(|e| format!("{path}: {e}")));
            }
            Err(e) => out.push(Err(format!("{path}: {e}"))),
        }
    }
    out
}

pub async fn reply(mut s: NamedPipeServer, doc: &[u8]) {
    let _ = s.write_all(doc).await;
    let _ = s.flush().await;
    let _ = s.disconnect();
}
