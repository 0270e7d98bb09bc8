//! Runs the tool named by CANARY_TOOL and fails the build when it cannot be started.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=CANARY_TOOL");
    let tool = std::env::var("CANARY_TOOL").expect("CANARY_TOOL names a tool");
    match Command::new(&tool).arg("--version").output() {
        Ok(_) => println!("cargo::warning=CANARY-FOUND {tool}"),
        Err(err) => panic!("CANARY-MISSING {tool}: {err}"),
    }
}
