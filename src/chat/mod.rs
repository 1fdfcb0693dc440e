//! The chat side: the Bot API client over rustls (`telegram`, `tls`) and the narrow trait
//! the daemon talks to it through (`bot`), parsing what an
//! allowed user typed (`command`), deciding what a message asks for (`decide`), the
//! replies (`report`) and the inline keyboards (`buttons`). Imports the firewall layer
//! (to carry out and describe a change), the store, os and base; never [`crate::cli`].

pub(crate) mod approve;
pub(crate) mod bot;
pub(crate) mod buttons;
pub mod command;
pub(crate) mod decide;
pub(crate) mod report;
pub mod telegram;
pub(crate) mod tls;
