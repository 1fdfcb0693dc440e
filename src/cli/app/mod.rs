//! The command line: parse ([`args`]), dispatch, map errors to exit codes. The console
//! commands that change or show the firewall are in [`console`], the others in [`tools`].

use std::ffi::OsString;

use argh::FromArgs;

use crate::base::error::Result;
use crate::cli::check;
use crate::cli::daemon;
use crate::os::logging;

mod args;
mod console;
mod tools;

pub use args::Cli;
use args::{Sub, load};

/// Runs the command line; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut strings = Vec::with_capacity(args.len());
    for a in &args {
        match a.to_str() {
            Some(s) => strings.push(s.to_string()),
            None => {
                eprintln!("tgknock: arguments must be valid UTF-8");
                return 2;
            }
        }
    }
    let name = "tgknock";
    let rest: Vec<&str> = strings.iter().skip(1).map(String::as_str).collect();
    let cli = match Cli::from_args(&[name], &rest) {
        Ok(c) => c,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    0
                }
                Err(()) => {
                    eprintln!("{}", early.output.trim_end());
                    eprintln!("Run `tgknock --help` for usage.");
                    2
                }
            };
        }
    };
    if cli.version {
        println!("{}", crate::VERSION);
        return 0;
    }
    let Some(command) = cli.command else {
        eprintln!("tgknock: a command is needed. Run `tgknock --help` for usage.");
        return 2;
    };
    match &command {
        Sub::NotifyLogin(_) | Sub::ApproveLogin(_) => logging::init_fixed(),
        _ => logging::init(),
    }
    match dispatch(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tgknock: {}", logging::redact(&e.to_string()));
            e.exit_code()
        }
    }
}

fn dispatch(command: Sub) -> Result<i32> {
    match command {
        Sub::Run(c) => {
            let cfg = load(&c.config)?;
            daemon::run(cfg)?;
            Ok(0)
        }
        Sub::Open(c) => console::open(c),
        Sub::Close(c) => console::close(c),
        Sub::Status(c) => console::status(c),
        Sub::Check(c) => check::run(load(&c.config)),
        Sub::Whoami(c) => tools::whoami(c),
        Sub::Teardown(c) => console::teardown(c),
        Sub::Knock(c) => tools::knock(c),
        Sub::Ban(c) => console::ban(c),
        Sub::Unban(c) => console::unban(c),
        Sub::TotpSetup(c) => tools::totp_setup(c),
        Sub::Watchdog(c) => {
            let cfg = load(&c.config)?;
            crate::cli::watchdog::run(&cfg, c.config.as_deref())
        }
        Sub::Setup(c) => crate::cli::setup::run(c.config, c.wait),
        Sub::NotifyLogin(c) => Ok(crate::cli::login::run(c.config.as_deref())),
        Sub::ApproveLogin(c) => Ok(crate::cli::approve::run(c.config.as_deref())),
    }
}
