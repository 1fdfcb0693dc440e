//! The wall clock, and the expiry thread's sleep: until the next deadline by the wall
//! clock, woken at once when the clock is set (NTP stepping a board without a real-time
//! clock at boot, or a clock set back) or when a datagram says the deadlines changed.
//!
//! The expiry (`daemon::Expiry`) works through [`Alarm`], a seam the unit tests drive with
//! a clock they step. The real one, [`SystemAlarm`], is a `timerfd` on `CLOCK_REALTIME`
//! armed at the next deadline with `TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET`: it wakes
//! at the deadline or at a step of the clock, and never in between.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::os::sys::{self, WallTimer};

/// What the expiry needs of time: the wall clock, a clock no one sets, and a sleep that a
/// step of the wall clock ends.
pub(crate) trait Alarm: Send {
    /// The wall clock, since the Unix epoch.
    fn wall(&self) -> Duration;
    /// A clock that setting the wall clock does not move (`CLOCK_MONOTONIC`), from any
    /// origin.
    fn steady(&self) -> Duration;
    /// Sleeps until the wall clock reaches `at` (without end when `None`), the wall clock
    /// is set, or something else asks for a look (the daemon's wake socket). May return
    /// early for no reason: the caller looks at the clock again.
    fn sleep(&mut self, at: Option<Duration>);
}

/// The wall clock minus the steady one, in milliseconds: it moves when the wall clock is
/// set, and not otherwise (NTP slews both alike).
pub(crate) fn gap(a: &dyn Alarm) -> i128 {
    a.wall().as_millis() as i128 - a.steady().as_millis() as i128
}

/// The wall clock, since the Unix epoch (in a debug build run with the test hook, moved by
/// its offset).
pub(crate) fn wall() -> Duration {
    let real = real_wall();
    match test_offset() {
        0 => real,
        s if s > 0 => real + Duration::from_secs(s.unsigned_abs()),
        s => real.saturating_sub(Duration::from_secs(s.unsigned_abs())),
    }
}

fn real_wall() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn steady() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// The longest wait between looks at the clock when the kernel offers no timerfd.
const FALLBACK_TICK: Duration = Duration::from_secs(1);
/// How often the test hook's offset is read again (debug builds with the hook only).
const TEST_TICK: Duration = Duration::from_millis(100);

/// The daemon's alarm: a timerfd on the wall clock and the wake socket. Without a timerfd
/// (a kernel or emulator that has none), a wait of at most a second while a deadline is
/// pending, the clock compared at each.
pub(crate) struct SystemAlarm {
    socket: UnixDatagram,
    timer: Option<WallTimer>,
    /// Arming failed once (said once).
    arm_failed: bool,
}

impl SystemAlarm {
    pub(crate) fn new(socket: UnixDatagram) -> SystemAlarm {
        if let Err(e) = socket.set_nonblocking(true) {
            log::warn!("cannot make the wake socket non-blocking: {e}");
        }
        let timer = match WallTimer::new() {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!(
                    "no timerfd ({e}): deadlines and steps of the clock are looked at every second while a deadline is pending"
                );
                None
            }
        };
        SystemAlarm {
            socket,
            timer,
            arm_failed: false,
        }
    }
}

impl Alarm for SystemAlarm {
    fn wall(&self) -> Duration {
        wall()
    }

    fn steady(&self) -> Duration {
        steady()
    }

    fn sleep(&mut self, at: Option<Duration>) {
        let mut fds = vec![self.socket.as_raw_fd()];
        let mut timeout = None;
        let armed = match &self.timer {
            Some(t) => {
                // The timer runs on the real clock; armed even without a deadline (a
                // decade on), so that a step of the clock is told.
                let real_at =
                    at.map_or(real_wall() + Duration::from_secs(10 * 365 * 86_400), |a| {
                        let shift = test_offset();
                        if shift >= 0 {
                            a.saturating_sub(Duration::from_secs(shift.unsigned_abs()))
                        } else {
                            a + Duration::from_secs(shift.unsigned_abs())
                        }
                    });
                match t.arm(real_at) {
                    Ok(()) => {
                        fds.push(t.fd());
                        true
                    }
                    Err(e) => {
                        if !self.arm_failed {
                            log::warn!(
                                "cannot arm the timer for the next deadline ({e}); looking at the clock every second instead"
                            );
                        }
                        self.arm_failed = true;
                        false
                    }
                }
            }
            None => false,
        };
        if !armed && let Some(a) = at {
            timeout = Some(a.saturating_sub(wall()).min(FALLBACK_TICK));
        }
        if test_hook_on() {
            timeout = Some(timeout.map_or(TEST_TICK, |t| t.min(TEST_TICK)));
        }
        match sys::wait_readable(&fds, timeout) {
            Ok(ready) => {
                if ready.first() == Some(&true) {
                    let mut buf = [0u8; 64];
                    while self.socket.recv(&mut buf).is_ok() {}
                }
                if ready.get(1) == Some(&true)
                    && let Some(t) = &self.timer
                {
                    t.news();
                }
            }
            Err(e) => {
                log::error!("waiting for the next deadline failed: {e}");
                std::thread::sleep(FALLBACK_TICK);
            }
        }
    }
}

/// The test hook's variable: in a debug build, `tgknock run` adds to its wall clock the
/// whole seconds the file it names holds (negative: behind), read again at every look at
/// the clock, so that the integration tests can step the daemon's clock without touching
/// the machine's. Only `run` reads it, only from the environment its invoker gave it, and
/// only a file of the daemon's own user that no one else may write; release builds have
/// no such hook.
pub(crate) const TEST_CLOCK_VAR: &str = "_TGKNOCK_TEST_CLOCK_FILE";

#[cfg(debug_assertions)]
static TEST_CLOCK: OnceLock<std::path::PathBuf> = OnceLock::new();

/// Turns the test hook on when its variable is set (`run` only).
pub(crate) fn test_hook_from_env() {
    let Some(path) = std::env::var_os(TEST_CLOCK_VAR) else {
        return;
    };
    #[cfg(debug_assertions)]
    {
        let path = std::path::PathBuf::from(path);
        log::warn!(
            "{TEST_CLOCK_VAR}: this debug build moves its wall clock by the seconds in {} (a test hook; release builds have none)",
            path.display()
        );
        let _ = TEST_CLOCK.set(path);
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = path;
        log::warn!("{TEST_CLOCK_VAR} is ignored: only debug builds have this test hook");
    }
}

fn test_hook_on() -> bool {
    #[cfg(debug_assertions)]
    {
        TEST_CLOCK.get().is_some()
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// The test hook's offset in seconds; 0 without the hook, or when its file is not a plain
/// file of the daemon's user that only it may write, or does not hold a number.
fn test_offset() -> i64 {
    #[cfg(debug_assertions)]
    if let Some(path) = TEST_CLOCK.get() {
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        static REFUSED: AtomicBool = AtomicBool::new(false);
        let refuse = |why: String| {
            if !REFUSED.swap(true, Ordering::Relaxed) {
                log::error!("{TEST_CLOCK_VAR}: ignoring {}: {why}", path.display());
            }
            0
        };
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return refuse(e.to_string()),
        };
        if !meta.is_file() || meta.uid() != sys::euid() || meta.mode() & 0o022 != 0 {
            return refuse(format!(
                "not a plain file of uid {} that only it may write",
                sys::euid()
            ));
        }
        return match std::fs::read_to_string(path).map(|t| t.trim().parse::<i64>()) {
            Ok(Ok(s)) => s.clamp(-(1 << 40), 1 << 40),
            Ok(Err(e)) => refuse(format!("not a number of seconds: {e}")),
            Err(e) => refuse(e.to_string()),
        };
    }
    0
}

/// A clock the unit tests set and step, and an alarm on it that returns at once.
/// Unix seconds now. The shells call this; the pure parts take `now` as an argument.
pub fn now() -> u64 {
    wall().as_secs()
}

/// The clock says a time before this binary was built: it is certainly wrong.
pub(crate) fn clock_before_build() -> bool {
    let built: u64 = env!("TGKNOCK_BUILD_EPOCH").parse().unwrap_or(0);
    now() + 86_400 < built
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Hook = Box<dyn FnOnce(&FakeAlarm) + Send>;

    #[derive(Default)]
    struct Time {
        wall: Duration,
        steady: Duration,
        armed: Vec<Option<Duration>>,
        hooks: std::collections::VecDeque<Hook>,
    }

    #[derive(Clone)]
    pub(crate) struct FakeAlarm(Arc<Mutex<Time>>);

    impl FakeAlarm {
        pub(crate) fn at(secs: u64) -> FakeAlarm {
            FakeAlarm(Arc::new(Mutex::new(Time {
                wall: Duration::from_secs(secs),
                steady: Duration::from_secs(1000),
                ..Time::default()
            })))
        }

        fn time(&self) -> std::sync::MutexGuard<'_, Time> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Sets the wall clock `secs` on (back when negative); the steady clock stays.
        pub(crate) fn step(&self, secs: i64) {
            let mut t = self.time();
            let d = Duration::from_secs(secs.unsigned_abs());
            t.wall = if secs >= 0 { t.wall + d } else { t.wall - d };
        }

        /// Sets the wall clock `ms` milliseconds on (back when negative).
        pub(crate) fn step_millis(&self, ms: i64) {
            let mut t = self.time();
            let d = Duration::from_millis(ms.unsigned_abs());
            t.wall = if ms >= 0 { t.wall + d } else { t.wall - d };
        }

        /// Lets `secs` pass on both clocks.
        pub(crate) fn pass(&self, secs: u64) {
            let mut t = self.time();
            t.wall += Duration::from_secs(secs);
            t.steady += Duration::from_secs(secs);
        }

        /// Runs `f` during the next sleep, as if it happened while the alarm slept.
        pub(crate) fn during_next_sleep(&self, f: impl FnOnce(&FakeAlarm) + Send + 'static) {
            self.time().hooks.push_back(Box::new(f));
        }

        /// Every time the alarm was asked to sleep to, in order.
        pub(crate) fn armed(&self) -> Vec<Option<Duration>> {
            self.time().armed.clone()
        }
    }

    impl Alarm for FakeAlarm {
        fn wall(&self) -> Duration {
            self.time().wall
        }

        fn steady(&self) -> Duration {
            self.time().steady
        }

        fn sleep(&mut self, at: Option<Duration>) {
            let hook = {
                let mut t = self.time();
                t.armed.push(at);
                t.hooks.pop_front()
            };
            if let Some(f) = hook {
                f(self);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_on_the_wall_clock_fires_at_its_time() {
        let t = WallTimer::new().expect("a timerfd (Linux 2.6.25 and later)");
        t.arm(real_wall() + Duration::from_millis(30)).unwrap();
        let ready = sys::wait_readable(&[t.fd()], Some(Duration::from_secs(20))).unwrap();
        assert_eq!(ready, vec![true]);
        assert_eq!(t.news(), sys::TimerNews::Fired);
        // Armed in the past: at once.
        t.arm(Duration::from_secs(1)).unwrap();
        let ready = sys::wait_readable(&[t.fd()], Some(Duration::from_secs(20))).unwrap();
        assert_eq!(ready, vec![true]);
        assert_eq!(t.news(), sys::TimerNews::Fired);
        // Far on: nothing yet.
        t.arm(real_wall() + Duration::from_secs(3600)).unwrap();
        let ready = sys::wait_readable(&[t.fd()], Some(Duration::from_millis(20))).unwrap();
        assert_eq!(ready, vec![false]);
        assert_eq!(t.news(), sys::TimerNews::Nothing);
    }

    #[test]
    fn the_gap_moves_with_a_step_only() {
        let a = fake::FakeAlarm::at(1_800_000_000);
        let g = gap(&a);
        a.pass(50);
        assert_eq!(gap(&a), g);
        a.step(-3600);
        assert_eq!(gap(&a), g - 3_600_000);
    }
}
