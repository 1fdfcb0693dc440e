//! The small value types under everything: addresses and blocks, durations and dates,
//! gates and knock sequences, rates, one-time codes, the shown form of text, and the one
//! error type. Pure: nothing here does I/O, and nothing here imports from another layer.

pub mod addr;
pub mod duration;
pub(crate) mod error;
pub mod gate;
pub mod ids;
pub(crate) mod rate;
pub(crate) mod text;
pub(crate) mod totp;
