//! Running the firewall tools, and what every backend reads the same way: tools are run
//! here, never through a shell, with a cleared environment.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::base::error::{Error, Result};

/// The reason a probe of the kernel's deadlines failed, when the failure says the kernel
/// lacks the feature (rather than, say, the tool being missing).
pub(crate) fn lacks_deadlines(e: Error) -> Result<(), String> {
    match e {
        Error::Firewall {
            status: Some(_),
            stderr,
            ..
        } if stderr.contains("time") || stderr.contains("not supported") => {
            Err(stderr.trim().to_string())
        }
        _ => Ok(()),
    }
}

/// A rule's line as compared: without the handle nft may print after it, nor the counter
/// of packets and bytes it may carry (traffic moves it; it is no change of the rule).
pub(crate) fn rule_text(line: &str) -> String {
    let t = line.trim();
    let t = match t.rfind(" # handle ") {
        Some(at) => &t[..at],
        None => t,
    };
    let words: Vec<&str> = t.split_whitespace().collect();
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter"
            && words.get(i + 1) == Some(&"packets")
            && words.get(i + 3) == Some(&"bytes")
        {
            i += 5;
            continue;
        }
        out.push(words[i]);
        i += 1;
    }
    out.join(" ")
}

/// The last tools this process ran to change the rules ([`commit`]), newest last:
/// nf_tables names the process that committed each change (pid and name), so the watcher
/// ([`super::watch`]) knows tgknock's own.
static RAN: Mutex<Vec<Ran>> = Mutex::new(Vec::new());
/// How many runs [`RAN`] keeps: more than one change runs tools in the time the watcher
/// takes to read its notifications.
const RAN_KEPT: usize = 16;
/// How long after a tool exited its commit may still be read as tgknock's own: the
/// kernel queued the notification before the tool exited, and the watcher reads it within
/// a moment. A run that committed nothing (a check, a read-back, a failed or empty
/// transaction) is forgotten then, so its pid, once the kernel gives it to another
/// process, never hides that process's change.
const RAN_GRACE: Duration = Duration::from_secs(5);

struct Ran {
    pid: u32,
    /// The name the kernel gives the process (`comm`): the file name it was run by, at
    /// most 15 bytes.
    name: Vec<u8>,
    exited: Option<Instant>,
}

fn ran_list() -> std::sync::MutexGuard<'static, Vec<Ran>> {
    RAN.lock().unwrap_or_else(|e| e.into_inner())
}

fn remember(pid: u32, program: &Path) {
    let mut name = program
        .file_name()
        .map(|n| n.as_encoded_bytes().to_vec())
        .unwrap_or_default();
    name.truncate(15);
    let mut ran = ran_list();
    if ran.len() == RAN_KEPT {
        ran.remove(0);
    }
    ran.push(Ran {
        pid,
        name,
        exited: None,
    });
}

fn exited(pid: u32) {
    if let Some(r) = ran_list().iter_mut().find(|r| r.pid == pid) {
        r.exited = Some(Instant::now());
    }
}

/// Whether the process `pid` named `process` (as nf_tables says who committed) is a tool
/// this process ran and that is running or exited a moment ago; it is forgotten (one
/// transaction each: a pid the kernel gives to another process later is not ours). `pid`
/// is as this process sees pids: the kernel's, or in a container the committing socket's
/// port (see [`crate::os::nfwatch::Committer`]).
pub(crate) fn ran(pid: u32, process: Option<&str>) -> bool {
    let now = Instant::now();
    let mut ran = ran_list();
    ran.retain(|r| r.exited.is_none_or(|t| now.duration_since(t) < RAN_GRACE));
    let same = |r: &Ran| r.pid == pid && process.is_none_or(|p| p.as_bytes() == r.name);
    match ran.iter().position(same) {
        Some(at) => {
            ran.remove(at);
            true
        }
        None => false,
    }
}

#[cfg(test)]
pub(crate) fn remember_for_test(pid: u32, program: &str) {
    remember(pid, Path::new(program));
}

#[cfg(test)]
pub(crate) fn exited_for_test(pid: u32, ago: Duration) {
    if let Some(r) = ran_list().iter_mut().find(|r| r.pid == pid) {
        r.exited = Instant::now().checked_sub(ago);
    }
}

/// The result of running a tool that only reads or checks (nothing it does commits a
/// change): its stdout, or an error carrying its stderr.
pub(crate) fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    ok(output(program, args, stdin)?)
}

/// Runs a tool that changes the rules (`iptables-restore`, `nft -f -`, `nft delete
/// table`): the watcher then knows its commit for tgknock's own. Its stdout, or an
/// error carrying its stderr.
pub(crate) fn commit(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    ok(spawn(program, args, stdin, true)?)
}

fn ok((stdout, failed): (String, Option<Error>)) -> Result<String> {
    match failed {
        None => Ok(stdout),
        Some(e) => Err(e),
    }
}

/// Runs a tool that only reads or checks: its stdout, and the error carrying its stderr
/// when it failed (a tool may print what it did before the command that failed, as
/// `nft -f` does).
pub(crate) fn output(
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(String, Option<Error>)> {
    spawn(program, args, stdin, false)
}

/// Runs a tool; `commits`: it changes the rules, and is remembered for the watcher.
fn spawn(
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
    commits: bool,
) -> Result<(String, Option<Error>)> {
    let fail = |status: Option<i32>, stderr: String| Error::Firewall {
        program: program.display().to_string(),
        arguments: args.iter().map(|a| a.to_string()).collect(),
        status,
        stderr,
    };
    log::debug!("running {} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A cleared environment: the tool never sees the token (TGKNOCK_TOKEN may come
        // from the environment), nor anything else of ours.
        .env_clear()
        .env("LC_ALL", "C")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .spawn()
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (install iptables or nftables, or set TGKNOCK_IPTABLES / TGKNOCK_IP6TABLES / TGKNOCK_NFT)"
            } else {
                ""
            };
            fail(None, format!("cannot run it: {e}{hint}"))
        })?;
    // Only a run that changes the rules commits a change the watcher hears of: a check
    // (`nft -c`) or a read-back that is remembered would leave a pid and a port trusted
    // for nothing.
    if commits {
        remember(child.id(), program);
    }
    if let Some(input) = stdin {
        log::trace!("{} input:\n{input}", program.display());
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A tool that exits early closes the pipe; its exit status tells why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let pid = child.id();
    let out = child.wait_with_output();
    if commits {
        exited(pid);
    }
    let out = out.map_err(|e| fail(None, format!("cannot wait for it: {e}")))?;
    let failed = (!out.status.success()).then(|| {
        fail(
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    let stdout = String::from_utf8(out.stdout)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Ok((stdout, failed))
}
