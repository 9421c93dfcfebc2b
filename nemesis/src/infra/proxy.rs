//! A TCP proxy that injects network faults: the primary's stable address (repointed at a failover, as a
//! failover manager moves its `-rw` address), and the path to each broker node, slowed or cut in bursts.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::{mpsc, watch},
};

/// A proxy on a free loopback port to one target, which can be moved; every connection through it can be
/// delayed or cut.
#[derive(Debug)]
pub struct Forwarder {
    pub port: u16,
    target: Arc<Mutex<SocketAddr>>,
    /// Added one-way delay, in microseconds, of every chunk of bytes in either direction (0: none).
    delay_micros: Arc<AtomicU64>,
    /// Bumped to cut every connection open now: a forwarded connection ends when it sees a newer value.
    epoch: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// A proxy to `127.0.0.1:port`.
    pub async fn start(port: u16) -> Self {
        Self::start_to(([127, 0, 0, 1], port).into()).await
    }

    /// A proxy to `target`.
    pub async fn start_to(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port for the proxy");
        let port = listener.local_addr().expect("the proxy's port").port();
        let target = Arc::new(Mutex::new(target));
        let delay_micros = Arc::new(AtomicU64::new(0));
        let (epoch, _) = watch::channel(0u64);
        let (to, delay, epochs) = (target.clone(), delay_micros.clone(), epoch.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let to = *to.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (mut changed, delay) = (epochs.subscribe(), delay.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(to).await else { return };
                    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::select! {
                        _ = async { tokio::join!(pipe(in_read, out_write, delay.clone()), pipe(out_read, in_write, delay)) } => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        Self { port, target, delay_micros, epoch, task }
    }

    /// Sends new connections to `127.0.0.1:port` and cuts the ones to the old target.
    pub fn repoint(&self, port: u16) {
        *self.target.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ([127, 0, 0, 1], port).into();
        self.cut();
    }

    /// Cuts every connection open now (both ends see it closed); new ones go through.
    pub fn cut(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Delays every chunk of bytes by `delay` in each direction from now on (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_micros.store(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

/// Copies `from` to `to`, each chunk delivered `delay` after it was read (a latency, not a bandwidth cap:
/// chunks read meanwhile queue behind it and keep their own times).
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Arc<AtomicU64>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + Duration::from_micros(delay.load(Ordering::Relaxed));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    // The writer ends after the reader (the channel closes), so a half-closed connection still drains.
    tokio::join!(reader, writer);
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
