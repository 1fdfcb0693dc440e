//! The front doors: the command line (`app`), the daemon's loop, `setup`, `check`, the
//! watchdog, the PAM login hook, and the terminal QR code. Everything else is below them;
//! nothing imports from here.

pub mod app;
pub(crate) mod approve;
pub(crate) mod approve_server;
pub(crate) mod check;
pub(crate) mod daemon;
pub(crate) mod login;
pub(crate) mod qr;
pub(crate) mod setup;
pub(crate) mod watchdog;
