//! For the root unit tests of the netlink modules: a throwaway network namespace (deleted on
//! drop, also when a test panics), code run on a thread moved into it, and TCP connections
//! from a chosen source. Traffic stays inside the namespace.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::Command;

pub(crate) fn is_root() -> bool {
    crate::sys::geteuid() == 0
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A named network namespace with `lo` up.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    /// `fta-<tag>-<pid>`; one left by an earlier, killed run of the same name is replaced.
    pub(crate) fn create(tag: &str) -> Result<Netns, String> {
        let name = format!("fta-{tag}-{}", std::process::id());
        let _ = run(&["netns", "del", &name]);
        run(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace.
    pub(crate) fn exec(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs `f` on a new thread moved into the namespace (only that thread); its panics
    /// propagate.
    pub(crate) fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        let handle = std::thread::spawn(move || {
            let file = File::open(&path).expect("open the namespace");
            if let Err(e) = crate::sys::enter_netns(&file) {
                panic!("setns: {e}");
            }
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["netns", "del", &self.name]);
    }
}

/// A TCP connection from `src` (any 127/8 address works on lo) to `dst`.
pub(crate) fn connect_from(src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<TcpStream> {
    crate::sys::connect_from(src, dst)
}
