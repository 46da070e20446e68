//! One service binary of a drill's cluster, killed and restarted on its port.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::ServiceProcess;

/// One service binary that a drill may kill and start again on the same port (its clients
/// and the load keep their addresses, as behind a stable service address).
pub struct Node {
    pub name: &'static str,
    port: u16,
    env: Vec<(&'static str, String)>,
    database_url: String,
    namespace: String,
    process: Option<ServiceProcess>,
}

impl Node {
    pub(super) async fn start(
        name: &'static str,
        database_url: &str,
        namespace: &str,
        env: Vec<(&'static str, String)>,
    ) -> Self {
        let mut node = Self {
            name,
            port: test_support::free_port(),
            env,
            database_url: database_url.to_owned(),
            namespace: namespace.to_owned(),
            process: None,
        };
        node.restart().await;
        node
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (no drain, no lease handed over) and wait until it is gone.
    pub async fn kill(&mut self) {
        let mut process = self
            .process
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        process.signal(Signal::SIGKILL);
        process.wait_exit(Duration::from_secs(15)).await;
    }

    /// Start it (again) on its port and wait until it is ready.
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "{} is running already", self.name);
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .map(|(key, value)| (*key, value.clone()))
            .collect();
        self.process = Some(
            ServiceProcess::start_on_port(
                self.name,
                self.port,
                &self.database_url,
                &self.namespace,
                &env,
            )
            .await,
        );
    }

    /// Fail now if the process exited on its own (a crash under the fault).
    pub fn assert_alive(&mut self) {
        if let Some(process) = self.process.as_mut() {
            let exited = process.child.try_wait().expect("polling a service process");
            assert!(
                exited.is_none(),
                "{} exited by itself: {exited:?}",
                self.name
            );
        }
    }

    /// SIGTERM, exit code 0.
    pub async fn stop(mut self) {
        if let Some(process) = self.process.take() {
            process.stop().await;
        }
    }
}
