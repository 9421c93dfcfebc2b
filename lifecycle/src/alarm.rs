//! Waking a background task when its next piece of work falls due, instead of on a fixed tick.
//!
//! The task works out when its first job is due (a query), then sleeps until then, or until someone
//! who just created an earlier job says so through [`Alarm::due_in`]. Work created later than the
//! planned wake costs no wake-up at all, so a busy writer does not keep waking the task.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// A planned wake-up that earlier work can bring forward.
#[derive(Debug)]
pub struct Alarm {
    origin: Instant,
    /// Milliseconds after `origin`; `u64::MAX` while the task is working out its next wake, so that
    /// anything created meanwhile wakes it.
    planned_ms: AtomicU64,
    wake: Notify,
}

impl Default for Alarm {
    fn default() -> Self {
        Self { origin: Instant::now(), planned_ms: AtomicU64::new(u64::MAX), wake: Notify::new() }
    }
}

impl Alarm {
    /// Work falls due in `delay`: wake the task if it would sleep past that.
    pub fn due_in(&self, delay: Duration) {
        if self.millis(Instant::now() + delay) < self.planned_ms.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// Work is due now.
    pub fn due_now(&self) {
        self.wake.notify_one();
    }

    /// Call before looking for work: whatever is created from here on wakes the next [`Alarm::sleep`].
    pub fn looking(&self) {
        self.planned_ms.store(u64::MAX, Ordering::Release);
    }

    /// Sleeps `pause`, or less if earlier work is announced (also work announced since [`Alarm::looking`]).
    pub async fn sleep(&self, pause: Duration) {
        let at = Instant::now() + pause;
        self.planned_ms.store(self.millis(at), Ordering::Release);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = self.wake.notified() => {}
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX - 1)
    }
}

/// The wait until a due time a query worked out as seconds from now (`EXTRACT(EPOCH FROM min(t) - now())`):
/// `None` when nothing is due; a time already past is due now.
pub fn due_in_secs(secs: Option<f64>) -> Option<Duration> {
    secs.map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, not tokio's paused clock: its `test-util` feature would give tests a different tokio build
    // from `cargo run`'s, and one would rebuild the other's dependencies.
    #[tokio::test]
    async fn earlier_work_cuts_the_sleep_short_and_later_work_does_not() {
        let alarm = std::sync::Arc::new(Alarm::default());
        alarm.looking();
        // Announced while the task was looking: the next sleep returns at once.
        alarm.due_in(Duration::from_secs(60));
        let started = Instant::now();
        alarm.sleep(Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_millis(500));

        let sleeper = {
            let alarm = alarm.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                alarm.sleep(Duration::from_secs(10)).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        alarm.due_in(Duration::from_secs(30)); // later than the planned wake: ignored
        tokio::time::sleep(Duration::from_millis(300)).await;
        alarm.due_in(Duration::from_millis(1)); // earlier: wakes it now
        let slept = sleeper.await.unwrap();
        assert!(slept >= Duration::from_millis(600), "woken by later work after {slept:?}");
        assert!(slept < Duration::from_secs(5), "earlier work did not wake it ({slept:?})");
    }

    #[test]
    fn due_times_in_the_past_are_due_now() {
        assert_eq!(due_in_secs(None), None);
        assert_eq!(due_in_secs(Some(-3.0)), Some(Duration::ZERO));
        assert_eq!(due_in_secs(Some(1.5)), Some(Duration::from_millis(1500)));
        assert_eq!(due_in_secs(Some(f64::INFINITY)), Some(Duration::MAX));
    }
}
