//! tgknock's integration tests: the real binary against an in-test fake Bot API server
//! (loopback only) and a recording fake iptables, and — as root — against real
//! iptables/ip6tables inside network namespaces, judged by real TCP connections.
//!
//! `TGKNOCK_TEST_BIN` runs another build of the binary (an ARM one, say), and
//! `TGKNOCK_TEST_RUNNER` a program to run it with (`qemu-aarch64-static`), like ripgrep's
//! `CROSS_RUNNER`.

mod support;

mod actions;
mod approve;
mod board;
mod buttons;
mod chat;
mod clock;
mod console;
mod crash;
mod defense;
mod faults;
mod flood;
mod hostile;
mod knock;
mod login;
mod manpages;
mod netns;
mod nonroot;
mod notify;
mod renumber;
mod second_factor;
mod setup;
mod tls;
mod watchdog;
