//! Every scenario `bench` knows. To add one, implement [`crate::Scenario`] in a module here
//! and add it to [`registry`].

pub(crate) mod api_client;
pub(crate) mod api_rig;
pub mod bus_rig;
pub mod ceiling;
pub mod events;
pub mod open_api_create;
pub mod rpc_create;
pub mod sync;
pub mod system_create;
pub mod task_replicas;
pub mod tasks;

use crate::scenario::DynScenario;

/// Names that are commands rather than scenarios.
pub const RESERVED_NAMES: [&str; 2] = ["list", "all"];

/// All scenarios, in the order `bench all` runs them.
pub fn registry() -> Vec<Box<dyn DynScenario>> {
    vec![
        Box::new(ceiling::Ceiling),
        Box::new(events::Events),
        Box::new(tasks::Tasks),
        Box::new(task_replicas::TaskReplicas),
        Box::new(rpc_create::RpcCreate),
        Box::new(open_api_create::OpenApiCreate),
        Box::new(sync::Sync),
        Box::new(system_create::SystemCreate),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_not_reserved() {
        let scenarios = registry();
        let mut names: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();
        for name in &names {
            assert!(!RESERVED_NAMES.contains(name), "{name} is reserved");
            assert!(!name.is_empty() && !name.contains(char::is_whitespace));
        }
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "duplicate scenario name");
        assert!(scenarios.iter().all(|s| !s.description().is_empty()));
    }
}
