//! The one channel a publisher or an RPC client shares among its callers: read without waiting, opened by one
//! caller at a time, replaced when it broke or reached its lifetime, the one replaced left open a while.

use std::time::{Duration, Instant};

use lapin::Channel;
use tokio::sync::Mutex;

use crate::connection::{Bus, CHANNEL_TIMEOUT};

/// How long one channel is used before the next caller opens a fresh one. RabbitMQ 3.10's quorum queues
/// can drop, confirmed, every message a channel sends after one it lost across a partition
/// (rabbitmq-server#14589, fixed in 4.2); a new channel is a new publisher to them, so this bounds that
/// loss to two seconds' messages, which the mesh's end-to-end checks then send again. It costs two round
/// trips every two seconds.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(2);

/// Closes `channel` after `delay`: closed, not just forgotten, as a channel left open lingers on the broker
/// until its connection goes.
pub(crate) fn close_later(channel: Channel, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = channel.close(200, "replaced".into()).await;
    });
}

/// Why no channel could be had without opening one now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unready {
    /// The connection is down: opening would only wait.
    NotConnected,
    /// Another caller has been opening one for longer than a channel may take.
    Busy,
}

/// The current channel, with what its owner keeps beside it (`T`, cloned out to each caller).
pub(crate) struct ChannelCache<T> {
    /// Read without waiting, so no caller queues behind a reconnect.
    current: std::sync::Mutex<Option<Cached<T>>>,
    /// Taken only by whoever opens a new channel, so a burst after a reconnect opens one, not hundreds.
    opening: Mutex<()>,
    /// How long a replaced channel stays open, so what is in flight on it still ends.
    lingers: Duration,
}

struct Cached<T> {
    value: T,
    channel: Channel,
    opened: Instant,
}

impl<T> std::fmt::Debug for ChannelCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelCache").field("lingers", &self.lingers).finish_non_exhaustive()
    }
}

impl<T: Clone> ChannelCache<T> {
    /// An empty cache whose replaced channels stay open for `lingers`.
    pub(crate) fn new(lingers: Duration) -> Self {
        Self { current: std::sync::Mutex::new(None), opening: Mutex::new(()), lingers }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Cached<T>>> {
        self.current.lock().expect("channel cache lock")
    }

    /// The current channel's value, if the channel is connected and younger than [`CHANNEL_LIFETIME`].
    pub(crate) fn current(&self) -> Option<T> {
        self.slot()
            .as_ref()
            .filter(|c| c.channel.status().connected() && c.opened.elapsed() < CHANNEL_LIFETIME)
            .map(|c| c.value.clone())
    }

    /// The current channel's value, or a new one from `open` (one caller opens, the others wait for it, at
    /// most [`CHANNEL_TIMEOUT`]). The channel it replaces is closed once it has lingered.
    pub(crate) async fn get<E: From<Unready>>(
        &self,
        bus: &Bus,
        open: impl AsyncFnOnce() -> Result<(Channel, T), E>,
    ) -> Result<T, E> {
        if let Some(value) = self.current() {
            return Ok(value);
        }
        if !bus.is_connected() {
            return Err(Unready::NotConnected.into());
        }
        let _opening =
            tokio::time::timeout(CHANNEL_TIMEOUT, self.opening.lock()).await.map_err(|_| E::from(Unready::Busy))?;
        // Someone else may have opened it while this caller waited.
        if let Some(value) = self.current() {
            return Ok(value);
        }
        let (channel, value) = open().await?;
        let old = self.slot().replace(Cached { value: value.clone(), channel, opened: Instant::now() });
        if let Some(old) = old {
            close_later(old.channel, self.lingers);
        }
        Ok(value)
    }

    /// Retires the current channel (it failed, or is suspect): the next caller opens another, and this one
    /// is closed once it has lingered, so calls still in flight on it may end.
    pub(crate) fn retire(&self) {
        self.retire_if_older_than(Duration::ZERO);
    }

    /// Retires the current channel, as [`ChannelCache::retire`], if it has been open at least `age`. Whether
    /// one was retired.
    pub(crate) fn retire_if_older_than(&self, age: Duration) -> bool {
        let old = {
            let mut slot = self.slot();
            if slot.as_ref().is_some_and(|c| c.opened.elapsed() >= age) { slot.take() } else { None }
        };
        old.map(|old| close_later(old.channel, self.lingers)).is_some()
    }

    /// Takes the current channel out and closes it now: nothing on it is worth waiting for.
    pub(crate) fn close_now(&self) {
        let old = self.slot().take();
        if let Some(old) = old {
            close_later(old.channel, Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use ordermesh_telemetry::Metrics;

    use super::*;
    use crate::{BusError, Topology};

    /// A bus on the machine's RabbitMQ, connected.
    async fn bus() -> (Bus, tokio::sync::watch::Sender<bool>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let topology = Topology::ephemeral("test-channels", Duration::from_secs(60));
        let bus = Bus::start(ordermesh_config::DEFAULT_AMQP_URL.into(), topology, Metrics::new("test"), stopped);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bus.is_connected() {
            assert!(Instant::now() < deadline, "RabbitMQ reachable at the default URL");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (bus, stop)
    }

    #[tokio::test]
    async fn a_burst_opens_one_channel_and_a_retired_one_is_replaced() {
        let (bus, _stop) = bus().await;
        let cache = Arc::new(ChannelCache::<u32>::new(Duration::ZERO));
        let opened = Arc::new(AtomicUsize::new(0));
        let get = |cache: Arc<ChannelCache<u32>>, bus: Bus, opened: Arc<AtomicUsize>| async move {
            cache
                .get(&bus, async || {
                    let channel = bus.channel().await?;
                    let n = opened.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok::<_, BusError>((channel, u32::try_from(n).unwrap()))
                })
                .await
                .expect("a channel")
        };
        let burst: Vec<_> = (0..20).map(|_| tokio::spawn(get(cache.clone(), bus.clone(), opened.clone()))).collect();
        for task in burst {
            assert_eq!(task.await.unwrap(), 1, "every caller of the burst shares the first channel");
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);

        assert!(!cache.retire_if_older_than(Duration::from_secs(60)), "a young channel is kept");
        cache.retire();
        assert_eq!(cache.current(), None);
        assert_eq!(get(cache.clone(), bus.clone(), opened.clone()).await, 2, "a retired channel is replaced");
        cache.close_now();
        assert_eq!(get(cache.clone(), bus.clone(), opened.clone()).await, 3, "a closed channel is replaced");
    }

    #[tokio::test]
    async fn a_channel_is_not_used_past_its_lifetime() {
        let (bus, _stop) = bus().await;
        let cache = ChannelCache::<u32>::new(Duration::ZERO);
        let first = cache.get(&bus, async || Ok::<_, BusError>((bus.channel().await?, 1))).await.unwrap();
        assert_eq!((first, cache.current()), (1, Some(1)));
        tokio::time::sleep(CHANNEL_LIFETIME + Duration::from_millis(100)).await;
        assert_eq!(cache.current(), None, "past its lifetime a channel is not handed out");
        let second = cache.get(&bus, async || Ok::<_, BusError>((bus.channel().await?, 2))).await.unwrap();
        assert_eq!(second, 2);
    }
}
