//! tgknock keeps SSH (and other port sets) closed, and opens them for a while when an
//! allowed person asks a Telegram bot.
//!
//! The folders are the layers, top to bottom; a layer imports only from the layers below
//! it (ARCHITECTURE.md draws them, with the flow of one update):
//! - [`cli`]: the front doors — the command line, the daemon's loop, the console commands,
//!   `setup`, `check`, the watchdog and the login hook;
//! - [`chat`]: the Bot API client, parsing what a user typed, deciding what it asks for,
//!   the replies and the buttons;
//! - `firewall`: the rules wanted, the backends that put them in the kernel, and the
//!   keeper, the one transaction of a change;
//! - [`store`]: what is kept on disk — the configuration, the state, the declared actions;
//! - [`os`]: the system calls (the only `unsafe`), the clocks, files, logging, netlink;
//! - [`base`]: the small value types under them all: addresses, durations, gates, rates,
//!   one-time codes, the error type.
//!
//! Public are only the parts the fuzz targets and the tests use.

pub mod base;
pub mod chat;
pub mod cli;
mod firewall;
pub mod os;
pub mod store;

/// The version line: `tgknock 0.1.0 (aarch64-unknown-linux-musl)`.
pub const VERSION: &str = concat!(
    "tgknock ",
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TGKNOCK_TARGET"),
    ")"
);

/// The unit tests' shared fixtures.
#[cfg(test)]
mod testkit;
#[cfg(test)]
use testkit::fake_fw;
