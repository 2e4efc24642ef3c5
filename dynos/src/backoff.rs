//! Crash restarts' cool-off, as Heroku does it: an occasional crash is
//! restarted at once; crashes in a row wait longer each time (doubling from
//! [`Timers::backoff_first`](crate::Timers) up to `backoff_max`, 20 minutes
//! by default); a dyno that stayed up for `backoff_reset` starts over.
//! Sans I/O: the supervisor asks it how long to wait.

use std::time::Duration;

use crate::spec::Timers;

/// The cool-off state of one dyno.
#[derive(Debug, Clone)]
pub struct Backoff {
    timers: Timers,
    /// Crashes in a row.
    crashes: u32,
}

impl Backoff {
    /// No crash yet.
    pub fn new(timers: Timers) -> Self {
        Backoff { timers, crashes: 0 }
    }

    /// The process crashed after running for `ran`: how long to wait
    /// before starting it again.
    pub fn crashed(&mut self, ran: Duration) -> Duration {
        if ran >= self.timers.backoff_reset {
            self.crashes = 0;
        }
        self.crashes = self.crashes.saturating_add(1);
        match self.crashes {
            1 => Duration::ZERO,
            n => {
                let doublings = (n - 2).min(31);
                self.timers
                    .backoff_first
                    .saturating_mul(1 << doublings)
                    .min(self.timers.backoff_max)
            }
        }
    }

    /// A new release or a manual restart: the next crash is a first one.
    pub fn reset(&mut self) {
        self.crashes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_crash_restarts_at_once_then_the_cool_off_doubles_to_its_cap() {
        let mut b = Backoff::new(Timers::default());
        let waits: Vec<u64> = (0..9)
            .map(|_| b.crashed(Duration::from_secs(1)).as_secs())
            .collect();
        assert_eq!(waits, [0, 20, 40, 80, 160, 320, 640, 1200, 1200]);
    }

    #[test]
    fn a_dyno_that_stayed_up_or_was_restarted_starts_over() {
        let t = Timers::default();
        let mut b = Backoff::new(t);
        b.crashed(Duration::ZERO);
        assert_eq!(b.crashed(Duration::ZERO), t.backoff_first);
        assert_eq!(b.crashed(t.backoff_reset), Duration::ZERO);
        b.crashed(Duration::ZERO);
        b.reset();
        assert_eq!(b.crashed(Duration::ZERO), Duration::ZERO);
    }
}
