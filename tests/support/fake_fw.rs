//! Lays out the recording fake iptables (`fake_iptables.sh`) in a scratch directory:
//! `bin/iptables`, `bin/iptables-restore`, `bin/ip6tables`, `bin/ip6tables-restore`, and
//! the `fw/` folder where it keeps its rules and call log. Shared by the tests and the
//! benchmark.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub fn install(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("fw")).unwrap();
    let script = include_str!("fake_iptables.sh");
    for name in [
        "iptables",
        "iptables-restore",
        "ip6tables",
        "ip6tables-restore",
    ] {
        let p = dir.join("bin").join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
