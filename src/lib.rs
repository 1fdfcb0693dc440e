//! tgknock keeps SSH (and other port sets) closed, and opens them for a while when an
//! allowed person asks a Telegram bot.
//!
//! Pure cores ([`command`], [`rules`], [`config`], [`duration`], [`addr`], [`gate`],
//! [`report`]) and thin shells ([`firewall`] runs iptables, [`telegram`] talks HTTP,
//! [`state`] owns the files, [`daemon`] is the loop).

pub mod addr;
pub mod app;
pub mod command;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod error;
pub mod files;
pub mod firewall;
pub mod gate;
#[cfg(test)]
mod golden;
pub mod keeper;
pub mod logging;
pub mod notify;
pub mod report;
pub mod rules;
pub mod state;
pub mod sys;
pub mod telegram;
pub mod watchdog;

/// The version line: `tgknock 0.1.0 (aarch64-unknown-linux-musl)`.
pub const VERSION: &str = concat!(
    "tgknock ",
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TGKNOCK_TARGET"),
    ")"
);

/// Unix seconds now. The shells call this; the pure parts take `now` as an argument.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The clock says a time before this binary was built: it is certainly wrong.
pub fn clock_before_build() -> bool {
    let built: u64 = env!("TGKNOCK_BUILD_EPOCH").parse().unwrap_or(0);
    now() + 86_400 < built
}
