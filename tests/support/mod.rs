//! Test support: the fake Bot API, the fake iptables, and a builder for runs of the binary.

#![allow(dead_code)]

pub mod api;
pub mod env;
pub mod fake_fw;
pub mod netns;

pub use api::{FakeApi, Fault};
pub use env::{Daemon, Env};

/// The token every test uses; no output may ever contain its secret part.
pub const TOKEN: &str = "7000000001:AAF-TestSecretTestSecretTestSecret_x9";
pub const SECRET: &str = "AAF-TestSecretTestSecretTestSecret_x9";
/// The allowed user of every test.
pub const OWNER: i64 = 111_111_111;
pub const BOT: &str = "tgknock_test_bot";

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `f` every 50 ms until it gives `Some`, or panics after `secs` seconds with `what`.
/// The limit is a hang guard for a functional check, not a speed assertion.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > end {
            panic!("timed out after {secs} s waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
