//! Every variable a manifest sets is one a service reads.

use std::collections::{BTreeMap, BTreeSet};

use crate::compose_model::{KeyValues, compose, compose_service};
use crate::fixtures::APP_SERVICES;
use crate::k8s_model::{ConfigData, Deployment, manifests, require};

/// The variables `service`'s configuration reader asks for when given `env` (what a manifest
/// sets: some variables are read only when another is set, such as `GOOGLE_CLIENT_SECRET`
/// with `GOOGLE_CLIENT_ID`), in development and in production, taken from the reader itself
/// rather than a list kept by hand.
fn variables_read(service: &str, env: &BTreeMap<String, String>) -> BTreeSet<String> {
    use platform::config::{EnvReader, FromEnvironment, NamesRead};
    let names = NamesRead::default();
    for environment in ["development", "production"] {
        let mut vars = env.clone();
        vars.insert("ENVIRONMENT".to_owned(), environment.to_owned());
        let reader = EnvReader::from_map(vars).recording(&names);
        // Errors are expected (placeholders, missing variables): only the names matter.
        let _ = match service {
            "api" => api::Config::read(reader).map(drop),
            "sync-streamer" => sync_streamer::Config::read(reader).map(drop),
            "worker" => worker::Config::read(reader).map(drop),
            "cron" => cron::Config::read(reader).map(drop),
            "notifier" => notifier::Config::read(reader).map(drop),
            other => panic!("no configuration reader for {other}"),
        };
    }
    names.names()
}

/// Variables a process reads outside the service's configuration reader.
const READ_OUTSIDE_THE_CONFIG: [&str; 1] = [
    // tracing-subscriber's EnvFilter reads it directly.
    "RUST_LOG",
];

/// The variables of `env` that `service` never reads when started with it.
fn unread(service: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let read = variables_read(service, env);
    env.keys()
        .filter(|name| !read.contains(*name) && !READ_OUTSIDE_THE_CONFIG.contains(&name.as_str()))
        .cloned()
        .collect()
}

/// Issue 19: `SESSION_SECRET` was set in compose and the k8s Secret although no code read it.
/// A setting nobody reads misleads whoever sets it (they believe it does something).
#[test]
fn every_variable_the_manifests_set_is_read_by_a_service() {
    // The check itself: a variable no service reads is reported.
    let probe: BTreeMap<String, String> =
        [("SESSION_SECRET", "x"), ("DATABASE_URL", "postgres://db")]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
    assert_eq!(unread("api", &probe), vec!["SESSION_SECRET".to_owned()]);
    assert!(variables_read("notifier", &BTreeMap::new()).contains("SUPRSEND_API_KEY"));

    let compose = compose();
    for (name, _) in APP_SERVICES {
        let env = compose_service(&compose, name)
            .environment
            .as_ref()
            .map(KeyValues::to_map)
            .unwrap_or_default();
        let unread = unread(name, &env);
        assert!(
            unread.is_empty(),
            "docker-compose.yml sets {unread:?} for {name}, which it never reads"
        );
    }

    let manifests = manifests();
    let config: ConfigData = require(&manifests, "ConfigMap", "journal-config").typed();
    let secret: ConfigData = require(&manifests, "Secret", "journal-secrets").typed();
    // Shared by every Deployment (envFrom): each must be read by at least one service.
    let mut shared = config.data.clone();
    shared.extend(secret.data.clone());
    shared.extend(secret.string_data.clone());
    let read_by_any: BTreeSet<String> = APP_SERVICES
        .iter()
        .flat_map(|(name, _)| variables_read(name, &shared))
        .collect();
    let nobody_reads: Vec<&String> = shared
        .keys()
        .filter(|name| {
            !read_by_any.contains(*name) && !READ_OUTSIDE_THE_CONFIG.contains(&name.as_str())
        })
        .collect();
    assert!(
        nobody_reads.is_empty(),
        "deploy/k8s journal-config / journal-secrets set {nobody_reads:?}, which no service reads"
    );
    for (name, _) in APP_SERVICES {
        let deployment: Deployment = require(&manifests, "Deployment", name).typed();
        for container in &deployment.spec.template.spec.containers {
            let mut env = shared.clone();
            env.extend(
                container
                    .env
                    .iter()
                    .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default())),
            );
            let own: BTreeSet<&String> = container.env.iter().map(|var| &var.name).collect();
            let unread: Vec<String> = unread(name, &env)
                .into_iter()
                .filter(|var| own.contains(var))
                .collect();
            assert!(
                unread.is_empty(),
                "deploy/k8s {name}.yaml sets {unread:?}, which {name} never reads"
            );
        }
    }
}
