//! A TCP proxy that puts a network between a client and Postgres on one machine: every
//! byte is delayed by half a round trip each way, and a connection's first bytes by one
//! more round trip (what its TCP handshake costs on a real network, which a loopback
//! `accept` doesn't). With `--round-trip-us 1000` a benchmark runs as if the database were
//! on another host in the same region.
//!
//! Threads, not tokio: its timer has 1 ms granularity, too coarse for 0.5 ms delays;
//! `std::thread::sleep` is within tens of microseconds. Four threads per connection (a
//! reader and a writer each way) are fine for benchmark-sized connection counts.

use anyhow::Result;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct DelayProxy {
    pub port: u16,
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards to `target` with `round_trip` added.
    pub fn start(target: SocketAddr, round_trip: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                let accepted = Instant::now();
                std::thread::spawn(move || {
                    let Ok(outbound) = TcpStream::connect(target) else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (Ok(inbound_writer), Ok(outbound_writer)) =
                        (inbound.try_clone(), outbound.try_clone())
                    else {
                        return;
                    };
                    let one_way = round_trip / 2;
                    // A client's first bytes leave once its handshake is done (one round
                    // trip) and arrive half a round trip later.
                    forward(
                        inbound,
                        outbound_writer,
                        one_way,
                        Some(accepted + round_trip + one_way),
                    );
                    forward(outbound, inbound_writer, one_way, None);
                });
            }
        });
        Ok(Self { port })
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read (not before `not_before`);
/// a reader thread keeps reading meanwhile, so the delay is latency, not a bandwidth cap.
fn forward(mut from: TcpStream, mut to: TcpStream, delay: Duration, not_before: Option<Instant>) {
    let (chunks, due_chunks) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || chunks.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok((due, bytes)) = due_chunks.recv() {
            let due = not_before.map_or(due, |first| due.max(first));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
