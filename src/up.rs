//! `tunnel up`: every tunnel of one TOML file in one process. Authentication stays
//! lazy, and single-flight per auth domain ([`OrgLocks`]): the first connection to
//! any app of an organisation logs in once; the other apps get their tokens by the
//! org-token exchange. The file is reloaded on SIGHUP and when it changes: added
//! tunnels start, removed ones stop accepting and drain, changed ones are rebuilt;
//! unchanged ones, and their live connections, are not touched. A file that does not
//! parse or validate is reported and the running set stays as it was.

mod config;
mod import;

pub use config::{
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, Tunnel, default_path, load,
};
pub use import::from_cloudflared;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::auth::login::OrgLocks;
use crate::client::listen;
use crate::client::target::TargetBuilder;
use crate::console::Notice;
use crate::error::Error;
use crate::metrics::{Metrics, TunnelMetrics};

/// How long a burst of change events may take before the file is read again.
pub const SETTLE: Duration = Duration::from_millis(200);

/// A tunnel being served: its spec, the token that stops it, the one cancelled
/// once its listeners are closed, and its task.
struct Running {
    tunnel: Tunnel,
    stop: CancellationToken,
    closed: CancellationToken,
    task: JoinHandle<()>,
}

/// Serve every tunnel of `path` until `shutdown`, reloading when `reload` receives
/// (the caller sends on SIGHUP) and when the file changes (a watcher on its
/// directory, so editors that replace the file are seen too).
pub async fn run(
    path: &Path,
    shutdown: CancellationToken,
    reload: (mpsc::Sender<()>, mpsc::Receiver<()>),
    metrics: Option<Arc<Metrics>>,
    notice: Notice,
) -> Result<(), Error> {
    let (tx, mut rx) = reload;
    let shared = Shared {
        locks: Arc::new(OrgLocks::default()),
        notice,
        metrics,
        registry: crate::status::Registry::new(),
    };
    tokio::spawn(crate::status::serve(
        shared.registry.clone(),
        shutdown.clone(),
    ));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    crate::serve::raise_fd_limit();
    let tunnels = load(path, Some(&shared.locks), &shared.notice)?;
    let grace = tunnels
        .first()
        .map_or(crate::shutdown::GRACE, |(t, _)| t.grace_period);
    let shutdown = crate::shutdown::announce(&shutdown, grace);
    for (t, target) in tunnels {
        let r = start(t, target, &shared, &shutdown).await?;
        running.insert(r.tunnel.name.clone(), r);
    }
    info!("{} tunnels up from {}", running.len(), path.display());
    let _watcher = match watch(path, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            let shown = path.display();
            tracing::warn!("not watching {shown} for changes ({e}); reload it with SIGHUP");
            None
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = rx.recv() => {}
        }
        // An editor's save is several events: let them settle, then reload once.
        tokio::time::sleep(SETTLE).await;
        while rx.try_recv().is_ok() {}
        apply(path, &mut running, &shared, &shutdown).await;
    }
    for r in running.into_values() {
        let _ = r.task.await;
    }
    Ok(())
}

/// Watch the directory of `path` and send on `tx` when `path` itself changes.
fn watch(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let name = path.file_name().map(|n| n.to_os_string());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let ours = event.is_ok_and(|e| {
            !e.kind.is_access() && e.paths.iter().any(|p| p.file_name() == name.as_deref())
        });
        if ours {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Reload: compare the new file with what runs, and change only what differs.
async fn apply(
    path: &Path,
    running: &mut BTreeMap<String, Running>,
    shared: &Shared,
    shutdown: &CancellationToken,
) {
    let new = match load(path, Some(&shared.locks), &shared.notice) {
        Ok(t) => t,
        Err(e) => {
            return error!("not reloaded, the running tunnels stay as they were: {e}");
        }
    };
    let wanted: BTreeMap<String, (Tunnel, TargetBuilder)> =
        new.into_iter().map(|t| (t.0.name.clone(), t)).collect();
    let gone: Vec<String> = running
        .iter()
        .filter(|(name, r)| wanted.get(*name).map(|w| &w.0) != Some(&r.tunnel))
        .map(|(name, _)| name.clone())
        .collect();
    let mut closing = Vec::new();
    for name in gone {
        if let Some(r) = running.remove(&name) {
            info!("tunnel {name}: stopping (live connections drain)");
            shared.registry.remove_tunnel(&name);
            r.stop.cancel();
            closing.push(r.closed);
            // The drain goes on in the background.
            tokio::spawn(r.task);
        }
    }
    // A reload is done once the addresses it dropped refuse connections (and a
    // changed tunnel's address is free to be bound again).
    for closed in closing {
        // Bounded, should a tunnel's task have ended some other way.
        let _ = tokio::time::timeout(Duration::from_secs(5), closed.cancelled()).await;
    }
    let (mut started, mut failed) = (0, 0);
    for (name, (t, target)) in wanted {
        if running.contains_key(&name) {
            continue;
        }
        match start(t, target, shared, shutdown).await {
            Ok(r) => {
                started += 1;
                running.insert(name, r);
            }
            Err(e) => {
                failed += 1;
                error!("tunnel {name} not started: {e}");
            }
        }
    }
    info!(
        "reloaded {}: {} tunnels running ({started} started, {failed} failed)",
        path.display(),
        running.len()
    );
}

/// What every tunnel of one `up` shares.
struct Shared {
    locks: Arc<OrgLocks>,
    /// Where the login flows' notes go.
    notice: Notice,
    metrics: Option<Arc<Metrics>>,
    registry: Arc<crate::status::Registry>,
}

async fn start(
    tunnel: Tunnel,
    target: TargetBuilder,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<Running, Error> {
    let target = target
        .metrics(shared.metrics.clone().map(|metrics| TunnelMetrics {
            metrics,
            name: tunnel.name.clone(),
        }))
        .status(crate::status::Tap {
            registry: shared.registry.clone(),
            name: tunnel.name.clone(),
        })
        .build();
    let target = Arc::new(target);
    // A changed tunnel's old listener may still be closing: retry a busy address
    // for a moment before giving up.
    let mut tries = 0;
    let listeners = loop {
        match listen::bind(&tunnel.listen).await {
            Ok(l) => break l,
            Err(listen::ListenError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && tries < 20 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let addrs = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    shared.registry.add_tunnel(
        &tunnel.name,
        &target.url(),
        addrs,
        target.credentials().login().cloned(),
        target.credentials().kind(),
    );
    let stop = shutdown.child_token();
    let closed = CancellationToken::new();
    let keepalive = crate::bridge::Keepalive {
        interval: tunnel.keepalive_interval,
        timeout: tunnel.keepalive_timeout,
    };
    let grace = tunnel.grace_period;
    let task = tokio::spawn(listen::serve(
        listeners,
        target,
        stop.clone(),
        Some(closed.clone()),
        grace,
        keepalive,
        Some(&tunnel.name),
    ));
    info!("tunnel {}", tunnel.plan_line());
    Ok(Running {
        tunnel,
        stop,
        closed,
        task,
    })
}
