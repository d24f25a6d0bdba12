//! Gzip on several cores: the input is cut into fixed-size blocks, each compressed on a
//! blocking thread into its own gzip member, and the members are emitted in order. A
//! concatenation of gzip members is one standard gzip stream (RFC 1952 §2.2), so
//! `gunzip -c | psql` restores it with stock tools. Memory is bounded by the blocks in
//! flight, whatever the input size.

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::VecDeque;
use std::io::Write;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

/// Input per gzip member. The deflate window is 32 KiB, so resetting it once per MiB costs
/// well under 0.1% of ratio.
pub const BLOCK_SIZE: usize = 1024 * 1024;

/// How backups are compressed.
#[derive(Clone, Copy, Debug)]
pub struct GzipSettings {
    pub level: u32,
    /// Blocks compressing at once (threads used).
    pub threads: usize,
}

impl Default for GzipSettings {
    fn default() -> Self {
        Self {
            level: 3,
            threads: crate::config::cores(),
        }
    }
}

/// What the compressor read and wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Compressed {
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
}

/// Compresses `input` until EOF, sending gzip members to `out` in order. Returns when all
/// members were sent; an error is returned to the caller (who decides what `out` learns).
pub async fn gzip_stream(
    mut input: impl AsyncRead + Unpin,
    settings: GzipSettings,
    yield_to: Option<&crate::priority::Priority>,
    out: &mpsc::Sender<Result<Bytes>>,
) -> Result<Compressed> {
    let mut totals = Compressed::default();
    let mut pending: VecDeque<oneshot::Receiver<std::io::Result<Vec<u8>>>> = VecDeque::new();
    let level = Compression::new(settings.level.min(9));
    loop {
        if let Some(priority) = yield_to {
            priority.bulk_turn().await;
        }
        let block = read_block(&mut input).await.context("reading the dump")?;
        let at_end = block.len() < BLOCK_SIZE;
        if !block.is_empty() {
            totals.raw_bytes += block.len() as u64;
            pending.push_back(background::spawn(move || compress_member(&block, level)));
        }
        while pending.len() >= settings.threads.max(1) || (at_end && !pending.is_empty()) {
            let member = pending
                .pop_front()
                .expect("not empty")
                .await
                .map_err(|_| anyhow::anyhow!("a compression thread failed"))?
                .context("compressing")?;
            totals.compressed_bytes += member.len() as u64;
            if out.send(Ok(Bytes::from(member))).await.is_err() {
                anyhow::bail!("the backup store stopped reading");
            }
        }
        if at_end {
            return Ok(totals);
        }
    }
}

/// Background CPU work (compressing backups) on threads of lower CPU priority: on a machine
/// that also provisions tenants, the kernel gives a signup's work the CPU first and the
/// backups take what is left. Threads: one per core.
pub mod background {
    use std::sync::{mpsc, Mutex, OnceLock};
    use tokio::sync::oneshot;

    /// The nice value of background threads (0 normal, 19 lowest).
    pub const NICE: i32 = 10;

    type Task = Box<dyn FnOnce() + Send>;

    fn queue() -> &'static Mutex<mpsc::Sender<Task>> {
        static QUEUE: OnceLock<Mutex<mpsc::Sender<Task>>> = OnceLock::new();
        QUEUE.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Task>();
            let rx = std::sync::Arc::new(Mutex::new(rx));
            for i in 0..crate::config::cores() {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("pgfleet-background-{i}"))
                    .spawn(move || {
                        // Linux: a thread's nice value is its own (`0`: the calling thread).
                        // Raising it needs no privilege; failing to is harmless.
                        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
                        loop {
                            let task = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            match task {
                                // A panicking task drops its result sender (its caller sees
                                // an error); the thread stays in the pool.
                                Ok(task) => {
                                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                                }
                                Err(_) => return,
                            }
                        }
                    })
                    .expect("starting a background thread");
            }
            Mutex::new(tx)
        })
    }

    /// Runs `work` on a background thread; the receiver gets its result (an error if the
    /// work panicked).
    pub fn spawn<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = tx.send(work());
        });
        if let Ok(queue) = queue().lock() {
            let _ = queue.send(task);
        }
        rx
    }
}

async fn read_block(input: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Bytes> {
    let mut block = BytesMut::with_capacity(BLOCK_SIZE);
    while block.len() < BLOCK_SIZE {
        if input.read_buf(&mut block).await? == 0 {
            break;
        }
    }
    Ok(block.freeze())
}

fn compress_member(block: &[u8], level: Compression) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(block.len() / 3), level);
    encoder.write_all(block)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn members_concatenate_into_one_gzip_stream() {
        let input: Vec<u8> = (0..(3 * BLOCK_SIZE + 12345)).map(|i| (i % 251) as u8).collect();
        let (tx, mut rx) = mpsc::channel(4);
        let data = input.clone();
        let producer = tokio::spawn(async move {
            gzip_stream(&data[..], GzipSettings { level: 6, threads: 2 }, None, &tx).await
        });
        let mut gz = Vec::new();
        while let Some(chunk) = rx.recv().await {
            gz.extend_from_slice(&chunk.unwrap());
        }
        let totals = producer.await.unwrap().unwrap();
        assert_eq!(totals.raw_bytes, input.len() as u64);
        assert_eq!(totals.compressed_bytes, gz.len() as u64);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn empty_input_gives_an_empty_stream() {
        let (tx, mut rx) = mpsc::channel(4);
        let totals = gzip_stream(&b""[..], GzipSettings::default(), None, &tx)
            .await
            .unwrap();
        drop(tx);
        assert!(rx.recv().await.is_none());
        assert_eq!(totals.raw_bytes, 0);
    }
}
