//! The `@orpc/client` conformance scripts in `tests/orpc-client`: the api's and the
//! sync-streamer's tests run them with Node against servers they start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// Generous: `tsc` alone takes several seconds on a busy 2-core machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// The scripts' folder, with its npm packages installed.
pub struct OrpcClientScripts {
    dir: PathBuf,
}

impl OrpcClientScripts {
    /// Find the folder; panics with what to run when its packages are missing.
    pub fn locate() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/orpc-client");
        let dir = dir.canonicalize().unwrap_or(dir);
        assert!(
            dir.join("node_modules/.bin/tsx").exists()
                && dir.join("node_modules/.bin/tsc").exists(),
            "{}/node_modules is missing: run `npm ci --prefix tests/orpc-client` (needs Node 20+)",
            dir.display()
        );
        Self { dir }
    }

    /// Type-check the scripts (`tsc --noEmit`); returns its output.
    pub async fn type_check(&self) -> String {
        self.run("tsc", &["--noEmit", "--pretty", "false"], &[])
            .await
    }

    /// Run the test script `script` with `tsx` and print its output; panics unless it printed
    /// `<checks>: all checks passed` (a script that stops early exits 0 without that line).
    pub async fn run_checks(&self, script: &str, checks: &str, env: &[(&str, &str)]) -> String {
        let output = self.run("tsx", &[script], env).await;
        println!("{output}");
        assert!(
            output.contains(&format!("{checks}: all checks passed")),
            "the script exited 0 without its success line:\n{output}"
        );
        output
    }

    /// Run one of the scripts' `node_modules/.bin` tools; panics with its output unless it
    /// exits 0. Returns stdout followed by stderr.
    pub async fn run(&self, tool: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut command = Command::new(self.dir.join("node_modules/.bin").join(tool));
        command
            .args(args)
            .current_dir(&self.dir)
            .envs(env.iter().copied())
            .kill_on_drop(true);
        let output = tokio::time::timeout(STEP_TIMEOUT, command.output())
            .await
            .unwrap_or_else(|_| panic!("`{tool}` did not finish within {STEP_TIMEOUT:?}"))
            .unwrap_or_else(|error| {
                panic!("could not run `{tool}` (is Node 20+ on PATH?): {error}")
            });
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "`{tool} {}` failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            args.join(" "),
            output.status
        );
        format!("{stdout}{stderr}")
    }
}

/// Debian's Chromium for the browser tests (`CHROMIUM` overrides the path); panics with how
/// to install it when it is missing.
pub fn chromium() -> String {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "Chromium is missing at {path}: `apt-get install chromium` (cargo xtask test does it), or set CHROMIUM"
    );
    path
}
