//! The operating system, thinly: the system calls (`sys`, the only `unsafe` in the crate),
//! the clocks and the alarm that wakes on a deadline or a clock step, files written safely
//! and atomically, logging, the board's own addresses over netlink, nftables' notifications
//! and the legacy tables' fingerprint (`nfwatch`), and systemd's notify socket. Imports
//! only [`crate::base`].

pub mod clock;
pub(crate) mod files;
pub(crate) mod logging;
pub(crate) mod netlink;
pub mod nfwatch;
pub(crate) mod notify;
pub(crate) mod sys;
