//! The WAN link emulated in userspace, for kernels without netem: two TUN devices
//! (one here, one inside the bench's namespace) and threads in this process that
//! carry every packet from one to the other after a fixed delay, dropping a fixed
//! share of them in one direction. The devices are not persistent: they vanish when
//! the [`Forwarder`] (which holds their descriptors) is dropped, or the bench exits.
//!
//! The only unsafe code in the bench is here: `ioctl(TUNSETIFF)`, `setns` and `poll`.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a blocked reader or writer waits before it looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Open a new TUN device `name` (layer 3, no packet information header), inside
/// network namespace `netns` (a name under /run/netns) when given. Its descriptor
/// is non-blocking; the device lives as long as the descriptor.
pub fn open(name: &str, netns: Option<&str>) -> Result<File, String> {
    let Some(ns) = netns else {
        return create(name);
    };
    let path = format!("/run/netns/{ns}");
    let ns_file = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let name = name.to_string();
    // Only this short-lived thread enters the namespace; the device is made in the
    // namespace of the thread that opens /dev/net/tun and stays there.
    std::thread::spawn(move || {
        // SAFETY: a valid descriptor of a network namespace; setns only changes
        // this thread's namespace, and the thread ends right after.
        if unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        create(&name)
    })
    .join()
    .map_err(|_| "the thread making the TUN device panicked".to_string())?
}

/// Open /dev/net/tun and attach it to a new TUN device `name` in the namespace of
/// the calling thread.
fn create(name: &str) -> Result<File, String> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(|e| format!("/dev/net/tun: {e}"))?;
    if name.len() >= libc::IFNAMSIZ {
        return Err(format!("interface name {name} is too long"));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call, on a
    // descriptor of /dev/net/tun that stays open.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(format!(
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(tun)
}

/// Wait until `f` is readable, or [`TICK`] has passed.
fn wait_readable(f: &File) {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and the count says one.
    unsafe { libc::poll(&mut p, 1, TICK.as_millis() as libc::c_int) };
}

/// What the forwarder did so far, counted by its threads.
#[derive(Debug, Default)]
struct Stats {
    /// Packets carried from the host device into the namespace.
    packets_in: AtomicU64,
    /// Packets carried from the namespace device out to the host.
    packets_out: AtomicU64,
    /// Packets dropped on the way in (the emulated loss).
    dropped_in: AtomicU64,
    /// Packets a device refused to take.
    write_errors: AtomicU64,
}

/// What the forwarder did so far.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Counts {
    /// Packets carried from the host device into the namespace.
    pub packets_in: u64,
    /// Packets carried from the namespace device out to the host.
    pub packets_out: u64,
    /// Packets dropped on the way in (the emulated loss).
    pub dropped_in: u64,
    /// Packets a device refused to take (should stay zero).
    pub write_errors: u64,
}

/// A small deterministic PRNG (xorshift64), so every run drops the same packets by
/// position in the stream.
struct XorShift(u64);

impl XorShift {
    /// The next value.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A packet and when it was read.
type Stamped = (Instant, Vec<u8>);

/// The threads carrying packets between the two devices, two per direction (a
/// reader and a writer); stopped, and the devices closed, on drop.
pub struct Forwarder {
    /// Tells every thread to finish.
    stop: Arc<AtomicBool>,
    /// The four threads; each holds the descriptors it uses.
    threads: Vec<JoinHandle<()>>,
    /// Counts, shared with the threads.
    stats: Arc<Stats>,
}

impl Forwarder {
    /// Carry packets between `host` (the device here) and `inner` (the device in the
    /// namespace), each `delay` after it was read, dropping a share `loss` (0 to 1)
    /// of those going in (host to namespace).
    pub fn start(host: File, inner: File, delay: Duration, loss: f64) -> Forwarder {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (host, inner) = (Arc::new(host), Arc::new(inner));
        let mut threads = Vec::new();
        for inward in [true, false] {
            let (from, to) = if inward {
                (host.clone(), inner.clone())
            } else {
                (inner.clone(), host.clone())
            };
            let (tx, rx) = std::sync::mpsc::channel();
            let (s, st) = (stop.clone(), stats.clone());
            let drop_below = if inward {
                (loss.clamp(0.0, 1.0) * u64::MAX as f64) as u64
            } else {
                0
            };
            threads.push(std::thread::spawn(move || {
                read_side(&from, &tx, drop_below, &s, &st)
            }));
            let (s, st) = (stop.clone(), stats.clone());
            threads.push(std::thread::spawn(move || {
                write_side(&rx, &to, delay, inward, &s, &st)
            }));
        }
        Forwarder {
            stop,
            threads,
            stats,
        }
    }

    /// What the forwarder did so far.
    pub fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            packets_in: get(&self.stats.packets_in),
            packets_out: get(&self.stats.packets_out),
            dropped_in: get(&self.stats.dropped_in),
            write_errors: get(&self.stats.write_errors),
        }
    }
}

/// Stop the threads; the last of them to end closes both devices.
impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Read packets from `from` and queue them, stamped, for the writer; drop those for
/// which the PRNG comes out below `drop_below`.
fn read_side(from: &File, to: &Sender<Stamped>, drop_below: u64, stop: &AtomicBool, st: &Stats) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match (&*from).read(&mut buf) {
            Ok(n) => {
                let at = Instant::now();
                if drop_below > 0 && rng.next() < drop_below {
                    st.dropped_in.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if to.send((at, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait_readable(from),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("WAN link: reading a TUN device failed: {e}");
                return;
            }
        }
    }
}

/// Write each queued packet to `to` once `delay` has passed since it was read (the
/// delay is the same for all, so the order stays).
fn write_side(
    from: &Receiver<Stamped>,
    to: &File,
    delay: Duration,
    inward: bool,
    stop: &AtomicBool,
    st: &Stats,
) {
    let carried = if inward {
        &st.packets_in
    } else {
        &st.packets_out
    };
    while !stop.load(Ordering::Relaxed) {
        let (at, packet) = match from.recv_timeout(TICK) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let wait = (at + delay).saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        // One write is one packet, taken whole or not at all.
        match (&*to).write(&packet) {
            Ok(n) if n == packet.len() => carried.fetch_add(1, Ordering::Relaxed),
            _ => st.write_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}
