//! tgknock keeps SSH (and other port sets) closed, and opens them for a while when an
//! allowed person asks a Telegram bot.
//!
//! Pure cores — [`command`] (chat parsing), `decide` (what a message asks for), `config`,
//! `firewall::rules` (the rules wanted, and the views of what the kernel shows),
//! [`duration`], [`addr`], [`gate`], `report` — and thin shells: `firewall` runs the tools
//! of its two backends, [`telegram`] talks HTTP (over `tls`, its lean rustls crypto),
//! [`state`] and `files` own the files, `keeper` is the one transaction of a change,
//! `daemon` the loop, [`app`] the command line.
//! Around the loop: `buttons` (inline keyboards, and a press as the command it stands for),
//! `actions` (`/run NAME`), `setup` (the guided first run), `login` (`notify-login`).
//!
//! Public are only the parts the fuzz targets and the tests use.

mod actions;
pub mod addr;
pub mod app;
mod buttons;
mod check;
mod clock;
pub mod command;
pub mod config;
mod daemon;
mod decide;
pub mod duration;
mod error;
mod files;
mod firewall;
pub mod gate;
mod keeper;
mod logging;
mod login;
mod notify;
mod qr;
mod report;
mod setup;
pub mod state;
mod sys;
pub mod telegram;
mod tls;
mod totp;
mod watchdog;

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
    clock::wall().as_secs()
}

/// The clock says a time before this binary was built: it is certainly wrong.
pub(crate) fn clock_before_build() -> bool {
    let built: u64 = env!("TGKNOCK_BUILD_EPOCH").parse().unwrap_or(0);
    now() + 86_400 < built
}

/// The integration tests' layout of the recording fake iptables, for the unit tests that
/// drive a keeper (one copy of it, not two).
#[cfg(test)]
#[path = "../tests/support/fake_fw.rs"]
mod fake_fw;
