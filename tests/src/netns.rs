//! A Linux network namespace of the test's own, for faults the kernel
//! makes: nodes run inside it on their own loopback addresses
//! (127.0.0.2, 127.0.0.3, ...), and iptables rules inside it drop packets
//! between them, all of them (a partition) or a random share (packet loss).
//! Nothing outside the namespace is touched; it is deleted when dropped.
//!
//! Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN), `ip` and `iptables`.

use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};
use nix::sched::{setns, CloneFlags};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with its loopback up; `Ok(None)` when this
    /// machine does not allow it (not root, no `ip` or `iptables`).
    pub fn create() -> anyhow::Result<Option<Self>> {
        let usable = ["ip", "iptables"].iter().all(|tool| {
            Command::new(tool)
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !usable {
            return Ok(None);
        }
        let name = format!(
            "quorra-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = run("ip", &["netns", "add", &name]) {
            let denied = e.to_string().contains("ermission denied")
                || e.to_string().contains("not permitted");
            return if denied { Ok(None) } else { Err(e) };
        }
        let ns = Self { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(Some(ns))
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["netns", "exec", self.name.as_str(), cmd];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Moves the calling thread into the namespace: sockets it opens, and
    /// processes and threads it starts, live there.
    pub fn enter(&self) -> anyhow::Result<()> {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.name))
            .context("open the namespace")?;
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(())
    }

    /// Drops every packet from `from` to `to` with probability `p` (1.0:
    /// all of them).
    pub fn drop_between(&self, from: &str, to: &str, p: f64) -> anyhow::Result<()> {
        let mut args = vec!["-A", "INPUT", "-s", from, "-d", to];
        let p = format!("{p}");
        if p != "1" {
            args.extend_from_slice(&["-m", "statistic", "--mode", "random", "--probability", &p]);
        }
        args.extend_from_slice(&["-j", "DROP"]);
        self.exec("iptables", &args)
    }

    /// Removes every drop rule.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.exec("iptables", &["-F", "INPUT"])
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
