//! A fault-injecting TCP proxy on loopback, for the links between nodes: pass, delay, rate
//! cap, stall (stop forwarding, so the sender's buffers fill) and cut (close every
//! connection and refuse new ones). Threads only; stops when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PASS: u8 = 0;
const STALL: u8 = 1;
const CUT: u8 = 2;
const CHUNK_BYTES: usize = 16 * 1024;
const POLL: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Ctl {
    mode: AtomicU8,
    /// Bytes per second per direction; 0 = unlimited.
    rate: AtomicU64,
    delay_ms: AtomicU64,
    stop: AtomicBool,
    /// Open connections (both ends), by connection number: removed when they end.
    conns: Mutex<Vec<(u64, TcpStream)>>,
    next_conn: AtomicU64,
    /// Keep no copy of the traffic (long runs through many proxies).
    no_capture: AtomicBool,
    /// Bytes forwarded (both directions), and the first CAPTURE_BYTES of them.
    forwarded: AtomicU64,
    captured: Mutex<Vec<u8>>,
}

/// Bytes of traffic kept for inspection.
const CAPTURE_BYTES: usize = 16 * 1024 * 1024;

pub struct Proxy {
    /// Where nodes should connect (use as `peer_advertise`).
    pub addr: String,
    ctl: Arc<Ctl>,
}

impl Proxy {
    /// Forwards connections to `target`, keeping no copy of the traffic.
    pub fn start_quiet(target: &str) -> Self {
        let p = Self::start(target);
        p.ctl.no_capture.store(true, Ordering::SeqCst);
        p
    }

    /// Forwards connections to `target`.
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let ctl = Arc::new(Ctl::default());
        let (c, target) = (ctl.clone(), target.to_string());
        std::thread::spawn(move || accept_loop(listener, target, c));
        Proxy { addr, ctl }
    }

    pub fn pass(&self) {
        self.ctl.mode.store(PASS, Ordering::SeqCst);
    }

    /// Stops forwarding (connections stay open, nothing moves).
    pub fn stall(&self) {
        self.ctl.mode.store(STALL, Ordering::SeqCst);
    }

    /// Closes every connection and refuses new ones until `pass`.
    pub fn cut(&self) {
        self.ctl.mode.store(CUT, Ordering::SeqCst);
        for (_, c) in self.ctl.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Whether the proxy passes traffic (neither cut nor stalled).
    pub fn passing(&self) -> bool {
        self.ctl.mode.load(Ordering::SeqCst) == PASS
    }

    pub fn rate(&self, bytes_per_s: u64) {
        self.ctl.rate.store(bytes_per_s, Ordering::SeqCst);
    }

    /// Bytes forwarded so far, both directions.
    pub fn forwarded(&self) -> u64 {
        self.ctl.forwarded.load(Ordering::SeqCst)
    }

    /// The traffic seen so far (the first 16 MiB), both directions interleaved.
    pub fn captured(&self) -> Vec<u8> {
        self.ctl.captured.lock().unwrap().clone()
    }

    pub fn delay(&self, d: Duration) {
        self.ctl
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.ctl.stop.store(true, Ordering::SeqCst);
        for (_, c) in self.ctl.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, target: String, ctl: Arc<Ctl>) {
    while !ctl.stop.load(Ordering::SeqCst) {
        let Ok((client, _)) = listener.accept() else {
            std::thread::sleep(POLL);
            continue;
        };
        if ctl.mode.load(Ordering::SeqCst) == CUT {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(&target) else {
            continue;
        };
        client.set_nonblocking(false).unwrap();
        let id = ctl.next_conn.fetch_add(1, Ordering::SeqCst);
        let mut conns = ctl.conns.lock().unwrap();
        conns.push((id, client.try_clone().unwrap()));
        conns.push((id, server.try_clone().unwrap()));
        drop(conns);
        for (from, to) in [
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
            (server, client),
        ] {
            let c = ctl.clone();
            std::thread::spawn(move || {
                pump(from, to, &c);
                c.conns.lock().unwrap().retain(|(i, _)| *i != id);
            });
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, ctl: &Ctl) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        while ctl.mode.load(Ordering::SeqCst) == STALL && !ctl.stop.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
        }
        if ctl.stop.load(Ordering::SeqCst) || ctl.mode.load(Ordering::SeqCst) == CUT {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Data read just before a stall is held until the link passes again.
        while ctl.mode.load(Ordering::SeqCst) == STALL && !ctl.stop.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
        }
        let delay = ctl.delay_ms.load(Ordering::SeqCst);
        let rate = ctl.rate.load(Ordering::SeqCst);
        let pause = Duration::from_millis(delay)
            + if rate > 0 {
                Duration::from_secs_f64(n as f64 / rate as f64)
            } else {
                Duration::ZERO
            };
        std::thread::sleep(pause);
        ctl.forwarded.fetch_add(n as u64, Ordering::SeqCst);
        if !ctl.no_capture.load(Ordering::SeqCst) {
            let mut cap = ctl.captured.lock().unwrap();
            let room = CAPTURE_BYTES.saturating_sub(cap.len()).min(n);
            cap.extend_from_slice(&buf[..room]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
