//! docker-compose.yml: the services, their builds, ports, variables, healthchecks and
//! dependencies.

use std::process::Command;

use crate::compose_model::{
    BuildSpec, DependsOn, Healthcheck, KeyValues, StringOrList, compose, compose_service,
};
use crate::fixtures::{API_VARS, APP_SERVICES, COMMON_VARS, NOTIFIER_VARS, repo_root, scalar_text};

const INFRA_SERVICES: [&str; 5] = ["postgres", "nats", "minio", "otel-collector", "jaeger"];

#[test]
fn compose_has_every_service() {
    let compose = compose();
    for name in APP_SERVICES
        .iter()
        .map(|(name, _)| *name)
        .chain(INFRA_SERVICES)
    {
        compose_service(&compose, name);
    }
}

#[test]
fn compose_builds_each_app_service_from_the_dockerfile() {
    let compose = compose();
    for (name, port) in APP_SERVICES {
        let service = compose_service(&compose, name);
        let BuildSpec {
            context,
            dockerfile,
            args,
        } = service
            .build
            .as_ref()
            .ok_or_else(|| format!("{name}: no `build`"))
            .and_then(|build| build.spec().map_err(|error| format!("{name}: {error}")))
            .unwrap();
        let context = repo_root().join(context.unwrap_or("."));
        let dockerfile = context.join(dockerfile.unwrap_or("Dockerfile"));
        assert_eq!(
            dockerfile.canonicalize().ok(),
            repo_root().join("deploy/Dockerfile").canonicalize().ok(),
            "{name}: build must use deploy/Dockerfile"
        );
        assert_eq!(
            args.get("SERVICE").map(String::as_str),
            Some(name),
            "{name}: build arg SERVICE"
        );
        if let Some(image_port) = args.get("PORT") {
            assert_eq!(image_port, &port.to_string(), "{name}: build arg PORT");
        }
        assert_eq!(
            service.image.as_deref(),
            Some(format!("journal/{name}:latest").as_str()),
            "{name}: image name"
        );
        assert_eq!(
            service.restart.as_deref(),
            Some("unless-stopped"),
            "{name}: restart policy"
        );
    }
}

#[test]
fn compose_app_services_have_port_env_healthcheck_and_healthy_dependencies() {
    let compose = compose();
    for (name, port) in APP_SERVICES {
        let service = compose_service(&compose, name);

        let env = service
            .environment
            .as_ref()
            .map(KeyValues::to_map)
            .unwrap_or_default();
        assert_eq!(
            env.get("PORT"),
            Some(&port.to_string()),
            "{name}: PORT in environment"
        );
        for var in COMMON_VARS {
            assert!(env.contains_key(var), "{name}: environment lacks {var}");
        }

        let check = service
            .healthcheck
            .as_ref()
            .and_then(Healthcheck::command)
            .ok_or_else(|| format!("{name}: no healthcheck"))
            .unwrap();
        assert!(check.contains("/readyz"), "{name}: healthcheck `{check}`");

        let depends = service
            .depends_on
            .as_ref()
            .map(DependsOn::conditions)
            .unwrap_or_default();
        for infra in ["postgres", "nats"] {
            assert_eq!(
                depends.get(infra).map(String::as_str),
                Some("service_healthy"),
                "{name}: depends_on {infra} with condition service_healthy"
            );
        }
    }

    let api = compose_service(&compose, "api");
    let api_depends = api
        .depends_on
        .as_ref()
        .map(DependsOn::conditions)
        .unwrap_or_default();
    assert_eq!(
        api_depends.get("minio").map(String::as_str),
        Some("service_healthy"),
        "api: depends_on minio with condition service_healthy"
    );
    let api_env = api
        .environment
        .as_ref()
        .map(KeyValues::to_map)
        .unwrap_or_default();
    for var in API_VARS {
        assert!(api_env.contains_key(var), "api: environment lacks {var}");
    }
    let notifier_env = compose_service(&compose, "notifier")
        .environment
        .as_ref()
        .map(KeyValues::to_map)
        .unwrap_or_default();
    for var in NOTIFIER_VARS {
        assert!(
            notifier_env.contains_key(var),
            "notifier: environment lacks {var}"
        );
    }
}

#[test]
fn compose_infrastructure_is_set_up() {
    let compose = compose();

    let nats = compose_service(&compose, "nats");
    let words = nats
        .command
        .as_ref()
        .map(StringOrList::words)
        .unwrap_or_default();
    assert!(
        words.iter().any(|word| word == "-js"),
        "nats: command must enable JetStream with -js, got {words:?}"
    );

    let postgres = compose_service(&compose, "postgres");
    let postgres_check = postgres
        .healthcheck
        .as_ref()
        .and_then(Healthcheck::command)
        .unwrap_or_default();
    assert!(
        postgres_check.contains("pg_isready"),
        "postgres: healthcheck `{postgres_check}`"
    );
    let postgres_env = postgres
        .environment
        .as_ref()
        .map(KeyValues::to_map)
        .unwrap_or_default();
    assert_eq!(
        postgres_env.get("POSTGRES_DB").map(String::as_str),
        Some("journal"),
        "postgres: POSTGRES_DB"
    );

    let collector = compose_service(&compose, "otel-collector");
    let mounts: Vec<String> = collector.volumes.iter().filter_map(scalar_text).collect();
    assert!(
        mounts
            .iter()
            .any(|mount| mount.starts_with("./deploy/otel/collector.yaml:")),
        "otel-collector must mount deploy/otel/collector.yaml, mounts: {mounts:?}"
    );
    let jaeger_env = compose_service(&compose, "jaeger")
        .environment
        .as_ref()
        .map(KeyValues::to_map)
        .unwrap_or_default();
    assert_eq!(
        jaeger_env.get("COLLECTOR_OTLP_ENABLED").map(String::as_str),
        Some("true"),
        "jaeger: COLLECTOR_OTLP_ENABLED"
    );
}

#[test]
fn compose_dependencies_exist_and_have_healthchecks() {
    let compose = compose();
    for (name, service) in &compose.services {
        let depends = service
            .depends_on
            .as_ref()
            .map(DependsOn::conditions)
            .unwrap_or_default();
        for (dependency, condition) in &depends {
            let target = compose
                .services
                .get(dependency)
                .ok_or_else(|| format!("{name} depends on `{dependency}`, which does not exist"))
                .unwrap();
            if condition == "service_completed_successfully" {
                // A one-shot (the roles bootstrap): it must finish, not stay healthy.
                assert_eq!(
                    target.restart.as_deref(),
                    Some("no"),
                    "{name} waits for `{dependency}` to complete: it must be a one-shot"
                );
                continue;
            }
            assert!(
                target
                    .healthcheck
                    .as_ref()
                    .and_then(Healthcheck::command)
                    .is_some(),
                "{name} depends on `{dependency}`, which has no healthcheck"
            );
        }
    }
}

/// The Compose command installed here: `docker compose` (v2) or `docker-compose` (v1).
fn compose_command() -> Option<Vec<&'static str>> {
    [vec!["docker", "compose"], vec!["docker-compose"]]
        .into_iter()
        .find(|command| {
            Command::new(command[0])
                .args(&command[1..])
                .arg("version")
                .output()
                .is_ok_and(|output| output.status.success())
        })
}

/// `docker compose config -q` validates the file against the compose schema, when Compose
/// (v2 plugin or v1) is installed.
#[test]
fn docker_compose_accepts_the_file() {
    let root = repo_root();
    let Some(command) = compose_command() else {
        println!(
            "note: neither `docker compose` nor `docker-compose` is installed; skipped \
             `config -q` (the YAML checks still ran)"
        );
        return;
    };
    let output = Command::new(command[0])
        .args(&command[1..])
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "`{} config -q` failed ({}):\n{}{}",
        command.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
