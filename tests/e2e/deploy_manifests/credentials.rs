//! Each service logs in as its own database role and NATS user (compose and k8s), and no
//! shipped sync token secret passes in production.

use std::collections::{BTreeMap, BTreeSet};

use crate::compose_model::{KeyValues, compose, compose_service};
use crate::fixtures::{read, scalar_text};
use crate::k8s_model::{ConfigData, Deployment, Job, manifests, require};

/// Variables each Deployment sets for itself: its own database role and NATS user.
pub(crate) const PER_SERVICE_VARS: [&str; 4] = [
    "DATABASE_URL",
    "DATABASE_PASSWORD",
    "NATS_USER",
    "NATS_PASSWORD",
];

/// Issue 19: each service logs in as its own database role and NATS user, with passwords
/// from the Secrets the bootstrap job and the NATS servers read, under the same keys.
#[test]
fn k8s_each_service_has_its_own_role_and_nats_user() {
    let manifests = manifests();
    let config: ConfigData = require(&manifests, "ConfigMap", "journal-config").typed();
    let shared_secret: ConfigData = require(&manifests, "Secret", "journal-secrets").typed();
    for var in PER_SERVICE_VARS {
        assert!(
            !config.data.contains_key(var)
                && !shared_secret.string_data.contains_key(var)
                && !shared_secret.data.contains_key(var),
            "{var} differs per service: set it in each Deployment, not in a shared object"
        );
    }
    assert_eq!(
        config.data.get("NATS_STREAM_REPLICAS").map(String::as_str),
        Some("3"),
        "the streams are replicated over the three NATS nodes"
    );
    let keys = |name: &str| -> BTreeSet<String> {
        let secret: ConfigData = require(&manifests, "Secret", name).typed();
        secret
            .string_data
            .keys()
            .chain(secret.data.keys())
            .cloned()
            .collect()
    };
    let postgres_passwords = keys("journal-postgres-passwords");
    let nats_passwords = keys("journal-nats-passwords");

    for role in platform::roles::SERVICE_ROLES {
        let deployment: Deployment = require(&manifests, "Deployment", role.service).typed();
        let container = &deployment.spec.template.spec.containers[0];
        let env = |name: &str| {
            container
                .env
                .iter()
                .find(|var| var.name == name)
                .unwrap_or_else(|| panic!("{}: no env {name}", role.service))
        };
        let url = env("DATABASE_URL").value.clone().unwrap_or_default();
        let url = url::Url::parse(&url).unwrap();
        assert_eq!(
            url.username(),
            role.role,
            "{}: DATABASE_URL user",
            role.service
        );
        assert_eq!(
            url.password(),
            None,
            "{}: no password in DATABASE_URL",
            role.service
        );
        assert_eq!(
            env("DATABASE_PASSWORD").secret_key(),
            Some(("journal-postgres-passwords", role.role)),
            "{}: DATABASE_PASSWORD",
            role.service
        );
        assert_eq!(
            env("NATS_USER").value.as_deref(),
            Some(role.role),
            "{}",
            role.service
        );
        assert_eq!(
            env("NATS_PASSWORD").secret_key(),
            Some(("journal-nats-passwords", role.role)),
            "{}: NATS_PASSWORD",
            role.service
        );
        assert!(
            postgres_passwords.contains(role.role),
            "journal-postgres-passwords lacks {}",
            role.role
        );
        assert!(
            nats_passwords.contains(role.role),
            "journal-nats-passwords lacks {}",
            role.role
        );
    }

    // The NATS servers get every user's password under the name accounts.conf reads.
    let nats: Deployment = require(&manifests, "StatefulSet", "nats").typed();
    assert_eq!(nats.spec.replicas, Some(3), "a 3-node NATS cluster");
    let nats_env = &nats.spec.template.spec.containers[0].env;
    let accounts = read("deploy/k8s/nats/accounts.conf");
    for permissions in bus::permissions::service_permissions() {
        let variable = bus::permissions::password_variable(permissions.user);
        assert!(
            accounts.contains(&format!("password: ${variable}")),
            "accounts.conf: {variable}"
        );
        let var = nats_env
            .iter()
            .find(|var| var.name == variable)
            .unwrap_or_else(|| panic!("the nats StatefulSet lacks {variable}"));
        assert_eq!(
            var.secret_key(),
            Some(("journal-nats-passwords", permissions.user)),
            "nats: {variable}"
        );
    }
    let server_conf = read("deploy/k8s/nats/nats-server.conf");
    for needed in [
        "include ./accounts.conf",
        "sync_interval: always",
        "cluster {",
    ] {
        assert!(
            server_conf.contains(needed),
            "nats-server.conf lacks `{needed}`"
        );
    }

    // The roles job sets every role's password from the same Secret.
    let job: Job = require(&manifests, "Job", "postgres-roles").typed();
    let job_container = &job.spec.template.spec.containers[0];
    let command = job_container.command.join(" ");
    for role in platform::roles::SERVICE_ROLES {
        let variable = platform::roles::password_variable(&role);
        assert!(
            command.contains(&format!("-v {variable}=")),
            "postgres-roles: psql -v {variable}"
        );
        assert!(
            job_container
                .env
                .iter()
                .any(|var| var.secret_key() == Some(("journal-postgres-passwords", role.role))),
            "postgres-roles: no password of {} from journal-postgres-passwords",
            role.role
        );
    }
    assert!(
        command.contains("roles.sql"),
        "postgres-roles runs roles.sql: {command}"
    );
}

/// Compose: each service as its own role and NATS user; the roles one-shot and the NATS
/// server use the checked-in files.
#[test]
fn compose_services_use_their_own_role_and_nats_user() {
    let compose = compose();
    for role in platform::roles::SERVICE_ROLES {
        let env = compose_service(&compose, role.service)
            .environment
            .as_ref()
            .map(KeyValues::to_map)
            .unwrap_or_default();
        let url =
            url::Url::parse(env.get("DATABASE_URL").map(String::as_str).unwrap_or("x:")).unwrap();
        assert_eq!(
            url.username(),
            role.role,
            "{}: DATABASE_URL user",
            role.service
        );
        assert_eq!(
            env.get("NATS_USER").map(String::as_str),
            Some(role.role),
            "{}",
            role.service
        );
        assert!(
            env.contains_key("NATS_PASSWORD"),
            "{}: NATS_PASSWORD",
            role.service
        );
    }
    let mounts = |name: &str| -> Vec<String> {
        compose_service(&compose, name)
            .volumes
            .iter()
            .filter_map(scalar_text)
            .collect()
    };
    assert!(
        mounts("postgres-roles")
            .iter()
            .any(|mount| mount.starts_with("./deploy/k8s/postgres/roles.sql:")),
        "postgres-roles must run deploy/k8s/postgres/roles.sql"
    );
    assert!(
        mounts("nats")
            .iter()
            .any(|mount| mount.starts_with("./deploy/k8s/nats/accounts.conf:")),
        "nats must use deploy/k8s/nats/accounts.conf"
    );
    let nats_env = compose_service(&compose, "nats")
        .environment
        .as_ref()
        .map(KeyValues::to_map)
        .unwrap_or_default();
    for permissions in bus::permissions::service_permissions() {
        let variable = bus::permissions::password_variable(permissions.user);
        assert!(
            nats_env.contains_key(&variable),
            "compose nats lacks {variable}"
        );
    }
}

/// Issue 15: a sync token secret anyone can read (the built-in default, a manifest's
/// placeholder or its development value) lets anyone sign a token for any user. Whatever
/// the manifests ship must be refused by both services when `ENVIRONMENT=production`, so a
/// deployment that forgets to replace it does not start.
#[test]
fn no_shipped_sync_token_secret_passes_in_production() {
    use platform::config::{EnvReader, FromEnvironment};

    let refused_by_both = |what: &str, mut vars: BTreeMap<String, String>| {
        vars.insert("ENVIRONMENT".to_owned(), "production".to_owned());
        let api = api::Config::read(EnvReader::from_map(vars.clone()));
        assert!(
            api.as_ref()
                .err()
                .is_some_and(|error| error.names("SYNC_TOKEN_SECRET")),
            "{what}: the api accepts the shipped SYNC_TOKEN_SECRET in production"
        );
        let streamer = sync_streamer::Config::read(EnvReader::from_map(vars));
        assert!(
            streamer
                .as_ref()
                .err()
                .is_some_and(|error| error.names("SYNC_TOKEN_SECRET")),
            "{what}: the sync-streamer accepts the shipped SYNC_TOKEN_SECRET in production"
        );
    };

    let manifests = manifests();
    let config: ConfigData = require(&manifests, "ConfigMap", "journal-config").typed();
    let secret: ConfigData = require(&manifests, "Secret", "journal-secrets").typed();
    let mut k8s = config.data.clone();
    k8s.extend(secret.data.clone());
    k8s.extend(secret.string_data.clone());
    assert_eq!(
        k8s.get("ENVIRONMENT").map(String::as_str),
        Some("production"),
        "the k8s manifests deploy with ENVIRONMENT=production"
    );
    refused_by_both("deploy/k8s", k8s);

    let compose = compose();
    for name in ["api", "sync-streamer"] {
        let env = compose_service(&compose, name)
            .environment
            .as_ref()
            .map(KeyValues::to_map)
            .unwrap_or_default();
        assert!(
            env.contains_key("SYNC_TOKEN_SECRET"),
            "docker-compose.yml {name}: SYNC_TOKEN_SECRET"
        );
        refused_by_both(&format!("docker-compose.yml {name}"), env);
    }
}
