//! Network namespaces for partitions between a pod and etcd: each pod gets a namespace joined to
//! the host by a veth pair on a /30 the harness creates (10.X.N.0/30, X from the process id so
//! that two runs do not collide), etcd also listens on the
//! host side's address, and a partition takes the host side of the link down. Needs root and
//! `ip`; [`available`] says whether they are there.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// One namespace and its veth pair.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    host_link: String,
    /// The host side's address: where etcd listens for this pod.
    pub host_addr: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this process may create network namespaces (root and `ip` present), found by
/// creating and removing one.
pub fn available() -> bool {
    let name = format!("scprobe{}", std::process::id());
    let ok = ip(&["netns", "add", &name]).is_ok();
    let _ = ip(&["netns", "del", &name]);
    ok
}

impl Netns {
    /// Creates namespace number `index` (0..=250) for this run.
    pub fn create(index: u8) -> Result<Self> {
        let tag = std::process::id() % 100_000;
        let name = format!("syncchaos{tag}n{index}");
        let host_link = format!("sc{tag}h{index}");
        let inner_link = format!("sc{tag}i{index}");
        let net = 100 + std::process::id() % 100;
        let host_addr = format!("10.{net}.{index}.1");
        let inner_addr = format!("10.{net}.{index}.2");
        ip(&["netns", "add", &name])?;
        let ns = Self {
            name,
            host_link,
            host_addr,
        };
        ip(&[
            "link",
            "add",
            &ns.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inner_link,
        ])?;
        ip(&["link", "set", &inner_link, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_addr),
            "dev",
            &ns.host_link,
        ])?;
        ip(&["link", "set", &ns.host_link, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&[
            "addr",
            "add",
            &format!("{inner_addr}/30"),
            "dev",
            &inner_link,
        ])?;
        inside(&["link", "set", &inner_link, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Cuts (`true`) or restores (`false`) the link between the namespace and the host.
    pub fn partition(&self, cut: bool) -> Result<()> {
        ip(&[
            "link",
            "set",
            &self.host_link,
            if cut { "down" } else { "up" },
        ])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
