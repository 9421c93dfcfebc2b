//! The primary's stable address for the failover scenario: a TCP forwarder the suite repoints.

/// The stable address of the primary, as a failover manager provides it: a TCP forwarder the suite repoints
/// to the promoted standby, cutting every connection it carried.
pub struct Forwarder {
    pub port: u16,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// Bumped on each repoint: a forwarded connection ends when it sees a newer one.
    epoch: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(target));
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let (to, epochs) = (target.clone(), epoch.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = to.load(std::sync::atomic::Ordering::SeqCst);
                let mut changed = epochs.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        Self { port, target, epoch, task }
    }

    /// Sends new connections to `port` and cuts the ones to the old target.
    pub fn repoint(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
        self.epoch.send_modify(|e| *e += 1);
    }
}
