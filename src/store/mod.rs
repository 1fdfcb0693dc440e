//! What is kept on disk: the configuration (files, environment, defaults, the table of
//! keys), the state (openings, bans, offsets, second-factor counts) and its lock, and the
//! actions `/run NAME` may start. Imports only [`crate::os`] and [`crate::base`].

pub(crate) mod actions;
pub mod config;
pub(crate) mod paths;
pub mod state;
