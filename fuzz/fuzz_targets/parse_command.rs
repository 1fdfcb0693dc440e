//! Any bytes, read as (lossy) UTF-8, through every parser of text a user or a config file
//! supplies: the chat command parser with a fixed gate set, durations, addresses, gates
//! and the config file. None may panic; a parsed `/open` must be one tgknock can apply.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tgknock::base::addr::Cidr;
use tgknock::base::duration::{self, Length};
use tgknock::base::gate::{Gate, parse_gates};
use tgknock::chat::command::{self, Command, Parsed};
use tgknock::store::config;

fn gates() -> &'static [Gate] {
    static GATES: OnceLock<Vec<Gate>> = OnceLock::new();
    GATES.get_or_init(|| {
        parse_gates("ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp s=2222/tcp").unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let gates = gates();
    for bot in ["tgknock_test_bot", ""] {
        if let Parsed::Command(Command::Open { gate, length, from }) =
            command::parse(&text, bot, gates)
        {
            assert!(gates.iter().any(|g| g.name == gate), "gate {gate:?}");
            if let Length::Secs(s) = length {
                assert!(s > 0 && s <= duration::MAX_SECS, "{s} s");
            }
            if let Some(c) = from {
                assert!(c.prefix() > 0, "{c}");
                assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
            }
        }
    }
    for bare in [None, Some(60)] {
        if let Ok(s) = duration::parse(&text, bare) {
            assert!(s <= duration::MAX_SECS, "{s} s from {text:?}");
            let again = duration::parse(&duration::to_config(s), None);
            assert_eq!(again, Ok(s), "{text:?}");
        }
    }
    if let Ok(c) = text.parse::<Cidr>() {
        assert!(c.prefix() > 0);
        assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
    }
    let _ = tgknock::base::addr::parse_listed(&text);
    if let Ok(gs) = parse_gates(&text) {
        assert!(!gs.is_empty() && gs.len() <= 32);
        assert!(gs.iter().all(|g| tgknock::base::gate::valid_name(g.name.as_str())));
    }
    let _ = config::parse_file(&text);
    let _ = command::usage(gates, 900, 86_400);
});
