//! The deployment files agree with the services: docker-compose.yml, deploy/Dockerfile,
//! deploy/k8s/*.yaml and deploy/otel/collector.yaml are parsed with a real YAML parser into
//! typed structs (only the fields checked here) and checked against the five binaries' names
//! and ports. When `docker-compose` is installed, the compose file is also validated by it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

/// The five binaries and the ports they listen on.
const APP_SERVICES: [(&str, u16); 5] = [
    ("api", 8080),
    ("sync-streamer", 8081),
    ("worker", 8082),
    ("cron", 8083),
    ("notifier", 8084),
];
const INFRA_SERVICES: [&str; 5] = ["postgres", "nats", "minio", "otel-collector", "jaeger"];

/// Variables every service reads.
const COMMON_VARS: [&str; 8] = [
    "DATABASE_URL",
    "NATS_URL",
    "LOG_FORMAT",
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "SHUTDOWN_GRACE_SECONDS",
    "DATABASE_MAX_CONNECTIONS",
    "HOST",
];
/// Variables only the api reads.
const API_VARS: [&str; 10] = [
    "S3_ENDPOINT",
    "S3_BUCKET",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET",
    "SYNC_TOKEN_SECRET",
    "CRON_SECRET",
    "AUTH_DEV_LOGIN",
];
/// Variables only the notifier reads.
const NOTIFIER_VARS: [&str; 2] = ["SUPRSEND_BASE_URL", "SUPRSEND_API_KEY"];
/// Variables that belong in the Kubernetes Secret, never in the ConfigMap.
const SECRET_VARS: [&str; 6] = [
    "SYNC_TOKEN_SECRET",
    "CRON_SECRET",
    "GOOGLE_CLIENT_SECRET",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "SUPRSEND_API_KEY",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path)
        .map_err(|error| format!("reading {}: {error}", path.display()))
        .unwrap()
}

/// Parse YAML into `T`, resolving aliases and `<<` merge keys first, as compose does.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> T {
    let mut value: Value = serde_yaml::from_str(text)
        .map_err(|error| format!("{what} is not valid YAML: {error}"))
        .unwrap();
    value
        .apply_merge()
        .map_err(|error| format!("{what}: bad merge key: {error}"))
        .unwrap();
    serde_yaml::from_value(value)
        .map_err(|error| format!("{what} does not have the expected shape: {error}"))
        .unwrap()
}

/// A YAML scalar as compose and Kubernetes read it (`8080`, `"8080"` and `true` are all text).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, ComposeService>,
}

#[derive(Debug, Deserialize)]
struct ComposeService {
    image: Option<String>,
    build: Option<Build>,
    command: Option<StringOrList>,
    environment: Option<KeyValues>,
    healthcheck: Option<Healthcheck>,
    depends_on: Option<DependsOn>,
    restart: Option<String>,
    #[serde(default)]
    volumes: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl StringOrList {
    fn words(&self) -> Vec<String> {
        match self {
            Self::String(text) => text.split_whitespace().map(str::to_owned).collect(),
            Self::List(items) => items.clone(),
        }
    }
    fn joined(&self) -> String {
        self.words().join(" ")
    }
}

/// `environment` / `args`: a mapping or a list of `KEY=value`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum KeyValues {
    Map(BTreeMap<String, Value>),
    List(Vec<String>),
}

impl KeyValues {
    fn to_map(&self) -> BTreeMap<String, String> {
        match self {
            Self::Map(map) => map
                .iter()
                .map(|(key, value)| (key.clone(), scalar_text(value).unwrap_or_default()))
                .collect(),
            Self::List(items) => items
                .iter()
                .map(|item| match item.split_once('=') {
                    Some((key, value)) => (key.to_owned(), value.to_owned()),
                    None => (item.clone(), String::new()),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Build {
    Context(String),
    Full {
        context: Option<String>,
        dockerfile: Option<String>,
        args: Option<KeyValues>,
    },
}

/// A `build` in its long form.
struct BuildSpec<'a> {
    context: Option<&'a str>,
    dockerfile: Option<&'a str>,
    args: BTreeMap<String, String>,
}

impl Build {
    /// The short form (a bare context) has no args, so it is refused.
    fn spec(&self) -> Result<BuildSpec<'_>, String> {
        match self {
            Self::Context(context) => Err(format!(
                "`build: {context}` has no args: use the long form with dockerfile and args"
            )),
            Self::Full {
                context,
                dockerfile,
                args,
            } => Ok(BuildSpec {
                context: context.as_deref(),
                dockerfile: dockerfile.as_deref(),
                args: args.as_ref().map(KeyValues::to_map).unwrap_or_default(),
            }),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    test: Option<StringOrList>,
    #[serde(default)]
    disable: bool,
}

impl Healthcheck {
    /// The command, unless the healthcheck is switched off.
    fn command(&self) -> Option<String> {
        let test = self.test.as_ref()?;
        let words = test.words();
        if self.disable || words.first().map(String::as_str) == Some("NONE") {
            return None;
        }
        Some(test.joined())
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Dependency>),
}

#[derive(Debug, Deserialize)]
struct Dependency {
    condition: Option<String>,
}

impl DependsOn {
    /// Each dependency with its condition (`service_started` when none is given).
    fn conditions(&self) -> BTreeMap<String, String> {
        match self {
            Self::List(names) => names
                .iter()
                .map(|name| (name.clone(), "service_started".to_owned()))
                .collect(),
            Self::Map(map) => map
                .iter()
                .map(|(name, dependency)| {
                    let condition = dependency
                        .condition
                        .clone()
                        .unwrap_or_else(|| "service_started".to_owned());
                    (name.clone(), condition)
                })
                .collect(),
        }
    }
}

fn compose() -> Compose {
    parse_yaml(&read("docker-compose.yml"), "docker-compose.yml")
}

fn compose_service<'a>(compose: &'a Compose, name: &str) -> &'a ComposeService {
    compose
        .services
        .get(name)
        .ok_or_else(|| format!("docker-compose.yml has no service `{name}`"))
        .unwrap()
}

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

/// One Dockerfile instruction: its keyword (upper case) and its arguments, continuation
/// lines joined and comments dropped.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    arguments: String,
}

/// The Dockerfile's stages, each a list of instructions starting with its `FROM`.
fn dockerfile_stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut logical_lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue; // comments (and parser directives) say nothing about the image
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical_lines.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical_lines {
        let (keyword, arguments) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            arguments: arguments.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(instruction);
    }
    stages
}

fn instructions<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|instruction| instruction.keyword == keyword)
        .map(|instruction| instruction.arguments.as_str())
        .collect()
}

/// The packages a stage's `RUN ... apt-get install ...` commands install.
fn installed_packages(stage: &[Instruction]) -> Vec<String> {
    let mut packages = Vec::new();
    for run in instructions(stage, "RUN") {
        for command in run.split("&&") {
            let words: Vec<&str> = command.split_whitespace().collect();
            if let Some(install) = words
                .windows(2)
                .position(|pair| pair == ["apt-get", "install"])
            {
                packages.extend(
                    words[install + 2..]
                        .iter()
                        .filter(|word| !word.starts_with('-'))
                        .map(|word| (*word).to_owned()),
                );
            }
        }
    }
    packages
}

/// The app healthchecks run inside the runtime image: it must have the tool they call.
#[test]
fn compose_healthcheck_tool_is_in_the_runtime_image() {
    let compose = compose();
    let stages = dockerfile_stages(&read("deploy/Dockerfile"));
    assert!(stages.len() >= 2, "deploy/Dockerfile has no second stage");
    let (builder, runtime) = (&stages[0], &stages[stages.len() - 1]);
    let runtime_packages = installed_packages(runtime);
    for (name, _) in APP_SERVICES {
        let check = compose_service(&compose, name)
            .healthcheck
            .as_ref()
            .and_then(Healthcheck::command)
            .unwrap_or_default();
        for tool in ["curl", "wget"] {
            if check.split_whitespace().any(|word| word == tool) {
                assert!(
                    runtime_packages.iter().any(|package| package == tool),
                    "{name}: the healthcheck uses {tool}, which the runtime stage does not \
                     install (it installs {runtime_packages:?})"
                );
            }
        }
    }
    // The builder builds the package named by SERVICE, reproducibly.
    assert!(
        instructions(builder, "ARG").contains(&"SERVICE"),
        "{builder:?}"
    );
    assert!(
        instructions(builder, "RUN").iter().any(|run| {
            run.split("&&")
                .any(|command| command.contains("cargo build --release --locked -p \"${SERVICE}\""))
        }),
        "the builder does not run `cargo build --release --locked -p \"${{SERVICE}}\"`: {builder:?}"
    );
    assert!(
        instructions(builder, "RUN")
            .iter()
            .any(|run| run.starts_with("--mount=type=cache")),
        "the builder's cargo build uses no cache mount"
    );
    // The runtime image runs the service binary, exposes its port and checks its readiness.
    assert_eq!(
        instructions(runtime, "ENTRYPOINT"),
        ["[\"/usr/local/bin/service\"]"]
    );
    assert_eq!(instructions(runtime, "EXPOSE"), ["${PORT}"]);
    let healthcheck = instructions(runtime, "HEALTHCHECK");
    assert_eq!(healthcheck.len(), 1, "{runtime:?}");
    let (_, check) = healthcheck[0]
        .split_once("CMD ")
        .expect("HEALTHCHECK runs a CMD");
    assert!(check.contains("/readyz"), "HEALTHCHECK {check}");
    for tool in ["curl", "wget"] {
        if check.split_whitespace().any(|word| word == tool) {
            assert!(
                runtime_packages.iter().any(|package| package == tool),
                "the image's HEALTHCHECK uses {tool}, which the runtime stage does not install"
            );
        }
    }
    let user = instructions(runtime, "USER")
        .last()
        .copied()
        .ok_or("the runtime stage sets no USER")
        .unwrap();
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runtime USER is root: {user}"
    );
}

#[test]
fn the_dockerfile_parser_ignores_comments_and_joins_continuations() {
    let stages = dockerfile_stages(
        "# syntax=docker/dockerfile:1\nFROM a AS b\nRUN x \\\n  && y\n\
         FROM c\n# curl for the checks\nRUN apt-get install -y --no-install-recommends \\\n    \
         ca-certificates wget\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(instructions(&stages[0], "RUN"), ["x && y"]);
    assert_eq!(installed_packages(&stages[1]), ["ca-certificates", "wget"]);
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

// ---------------------------------------------------------------------------------------------
// deploy/k8s

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    api_version: String,
    kind: String,
    metadata: Metadata,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Deployment {
    spec: DeploymentSpec,
}

#[derive(Debug, Deserialize)]
struct DeploymentSpec {
    replicas: Option<u32>,
    selector: LabelSelector,
    template: PodTemplate,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LabelSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct PodTemplate {
    metadata: TemplateMetadata,
    spec: PodSpec,
}

#[derive(Debug, Deserialize)]
struct TemplateMetadata {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    containers: Vec<Container>,
    termination_grace_period_seconds: Option<u64>,
    security_context: Option<PodSecurityContext>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSecurityContext {
    run_as_non_root: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(default)]
    ports: Vec<ContainerPort>,
    #[serde(default)]
    env: Vec<EnvVar>,
    #[serde(default)]
    env_from: Vec<EnvFrom>,
    readiness_probe: Option<Probe>,
    liveness_probe: Option<Probe>,
    resources: Option<Resources>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    name: Option<String>,
    container_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    name: String,
    value: Option<String>,
    value_from: Option<EnvVarSource>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvVarSource {
    secret_key_ref: Option<SecretKeyRef>,
}

#[derive(Debug, Deserialize)]
struct SecretKeyRef {
    name: String,
    key: String,
}

impl EnvVar {
    /// The Secret and key the value comes from, when it comes from one.
    fn secret_key(&self) -> Option<(&str, &str)> {
        let reference = self.value_from.as_ref()?.secret_key_ref.as_ref()?;
        Some((reference.name.as_str(), reference.key.as_str()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvFrom {
    config_map_ref: Option<NameRef>,
    secret_ref: Option<NameRef>,
}

#[derive(Debug, Deserialize)]
struct NameRef {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    http_get: Option<HttpGet>,
}

#[derive(Debug, Deserialize)]
struct HttpGet {
    path: String,
    port: IntOrString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(u16),
    String(String),
}

#[derive(Debug, Deserialize)]
struct Resources {
    #[serde(default)]
    requests: BTreeMap<String, Value>,
    #[serde(default)]
    limits: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct Service {
    spec: ServiceSpec,
}

#[derive(Debug, Deserialize)]
struct ServiceSpec {
    #[serde(default)]
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePort {
    port: u16,
    target_port: Option<IntOrString>,
}

#[derive(Debug, Deserialize)]
struct Hpa {
    spec: HpaSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HpaSpec {
    scale_target_ref: ScaleTargetRef,
    min_replicas: Option<u32>,
    max_replicas: u32,
    #[serde(default)]
    metrics: Vec<HpaMetric>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScaleTargetRef {
    api_version: String,
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct HpaMetric {
    resource: Option<HpaResource>,
}

#[derive(Debug, Deserialize)]
struct HpaResource {
    name: String,
    target: HpaTarget,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HpaTarget {
    average_utilization: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct ConfigData {
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default, rename = "stringData")]
    string_data: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Kustomization {
    #[serde(default)]
    resources: Vec<String>,
}

/// One YAML document of a manifest file.
struct Manifest {
    file: String,
    object: Object,
    value: Value,
}

impl Manifest {
    fn typed<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_yaml::from_value(self.value.clone())
            .map_err(|error| {
                format!(
                    "{}: {} {} does not have the expected shape: {error}",
                    self.file, self.object.kind, self.object.metadata.name
                )
            })
            .unwrap()
    }
}

fn k8s_dir() -> PathBuf {
    repo_root().join("deploy/k8s")
}

/// The YAML files in deploy/k8s, by file name.
fn k8s_files() -> BTreeSet<String> {
    std::fs::read_dir(k8s_dir())
        .expect("deploy/k8s exists")
        .map(|entry| entry.expect("readable dir entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect()
}

/// Every Kubernetes object in deploy/k8s (all documents of every file but the kustomization).
fn manifests() -> Vec<Manifest> {
    let mut manifests = Vec::new();
    for file in k8s_files() {
        if file.starts_with("kustomization.") {
            continue;
        }
        let text = read(&format!("deploy/k8s/{file}"));
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let mut value = Value::deserialize(document)
                .map_err(|error| format!("{file}, document {index}: invalid YAML: {error}"))
                .unwrap();
            if value.is_null() {
                continue; // an empty document, e.g. after a trailing `---`
            }
            value
                .apply_merge()
                .map_err(|error| format!("{file}, document {index}: bad merge key: {error}"))
                .unwrap();
            let object: Object = serde_yaml::from_value(value.clone())
                .map_err(|error| {
                    format!("{file}, document {index}: not a Kubernetes object: {error}")
                })
                .unwrap();
            manifests.push(Manifest {
                file: file.clone(),
                object,
                value,
            });
        }
    }
    manifests
}

fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> Option<&'a Manifest> {
    manifests
        .iter()
        .find(|manifest| manifest.object.kind == kind && manifest.object.metadata.name == name)
}

fn require<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Manifest {
    find(manifests, kind, name)
        .ok_or_else(|| format!("deploy/k8s has no {kind} named `{name}`"))
        .unwrap()
}

/// Whether a (non-empty) label selector picks objects with these labels.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

/// The port number a probe or Service target names, resolving a named port.
fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(name) => container
            .ports
            .iter()
            .find(|candidate| candidate.name.as_deref() == Some(name.as_str()))
            .map(|candidate| candidate.container_port),
    }
}

fn check_probe(probe: Option<&Probe>, path: &str, port: u16, container: &Container, what: &str) {
    let http = probe
        .and_then(|probe| probe.http_get.as_ref())
        .ok_or_else(|| format!("{what}: no httpGet probe"))
        .unwrap();
    assert_eq!(http.path, path, "{what}: path");
    assert_eq!(
        resolve_port(&http.port, container),
        Some(port),
        "{what}: port {:?}",
        http.port
    );
}

#[test]
fn k8s_deployments_match_the_services() {
    let manifests = manifests();
    for (name, port) in APP_SERVICES {
        let manifest = require(&manifests, "Deployment", name);
        assert_eq!(manifest.object.api_version, "apps/v1", "{name}: apiVersion");
        assert_eq!(
            manifest.file,
            format!("{name}.yaml"),
            "the {name} Deployment lives in {name}.yaml"
        );
        let deployment: Deployment = manifest.typed();
        let spec = &deployment.spec;
        let pod = &spec.template.spec;

        assert!(
            selects(&spec.selector.match_labels, &spec.template.metadata.labels),
            "{name}: selector {:?} must match the pod labels {:?}",
            spec.selector.match_labels,
            spec.template.metadata.labels
        );
        assert_eq!(
            spec.template
                .metadata
                .annotations
                .get("prometheus.io/scrape")
                .map(String::as_str),
            Some("true"),
            "{name}: prometheus.io/scrape annotation on the pod template"
        );
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(30),
            "{name}: terminationGracePeriodSeconds"
        );
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|context| context.run_as_non_root),
            Some(true),
            "{name}: securityContext.runAsNonRoot"
        );

        assert_eq!(pod.containers.len(), 1, "{name}: one container");
        let container = &pod.containers[0];
        let what = format!("{name} container {}", container.name);
        assert_eq!(
            container.image,
            format!("journal/{name}:latest"),
            "{what}: image"
        );
        assert!(
            container
                .ports
                .iter()
                .any(|candidate| candidate.container_port == port),
            "{what}: containerPort {port}"
        );
        check_probe(
            container.readiness_probe.as_ref(),
            "/readyz",
            port,
            container,
            &format!("{what} readinessProbe"),
        );
        check_probe(
            container.liveness_probe.as_ref(),
            "/healthz",
            port,
            container,
            &format!("{what} livenessProbe"),
        );
        let env_port = container
            .env
            .iter()
            .find(|var| var.name == "PORT")
            .and_then(|var| var.value.clone());
        assert_eq!(env_port, Some(port.to_string()), "{what}: env PORT");
        assert!(
            container.env_from.iter().any(|source| source
                .config_map_ref
                .as_ref()
                .is_some_and(|reference| reference.name == "journal-config")),
            "{what}: envFrom configMapRef journal-config"
        );
        assert!(
            container.env_from.iter().any(|source| source
                .secret_ref
                .as_ref()
                .is_some_and(|reference| reference.name == "journal-secrets")),
            "{what}: envFrom secretRef journal-secrets"
        );
        let resources = container
            .resources
            .as_ref()
            .ok_or_else(|| format!("{what}: no resources"))
            .unwrap();
        for key in ["cpu", "memory"] {
            assert!(
                resources.requests.contains_key(key),
                "{what}: resources.requests.{key}"
            );
            assert!(
                resources.limits.contains_key(key),
                "{what}: resources.limits.{key}"
            );
        }

        // The Service in the same file selects these pods and reaches the port.
        let service_manifest = require(&manifests, "Service", name);
        assert_eq!(
            service_manifest.file, manifest.file,
            "{name}: the Service lives with its Deployment"
        );
        let service: Service = service_manifest.typed();
        assert!(
            selects(&service.spec.selector, &spec.template.metadata.labels),
            "{name}: Service selector {:?} must match the pod labels",
            service.spec.selector
        );
        assert!(
            service.spec.ports.iter().any(|service_port| {
                let target = service_port
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(service_port.port));
                resolve_port(&target, container) == Some(port)
            }),
            "{name}: the Service must target port {port}"
        );
    }

    let cron: Deployment = require(&manifests, "Deployment", "cron").typed();
    assert_eq!(cron.spec.replicas, Some(2), "cron: replicas");
}

#[test]
fn k8s_worker_has_an_hpa() {
    let manifests = manifests();
    let hpa_manifest = manifests
        .iter()
        .find(|manifest| manifest.object.kind == "HorizontalPodAutoscaler")
        .ok_or("deploy/k8s has no HorizontalPodAutoscaler")
        .unwrap();
    assert_eq!(
        hpa_manifest.file, "worker.yaml",
        "the HPA lives in worker.yaml"
    );
    assert_eq!(hpa_manifest.object.api_version, "autoscaling/v2");
    let hpa: Hpa = hpa_manifest.typed();
    let target = &hpa.spec.scale_target_ref;
    assert_eq!(
        (
            target.api_version.as_str(),
            target.kind.as_str(),
            target.name.as_str()
        ),
        ("apps/v1", "Deployment", "worker"),
        "the HPA must target the worker Deployment"
    );
    require(&manifests, "Deployment", "worker");
    assert_eq!(hpa.spec.min_replicas, Some(2), "HPA minReplicas");
    assert_eq!(hpa.spec.max_replicas, 10, "HPA maxReplicas");
    let cpu = hpa
        .spec
        .metrics
        .iter()
        .filter_map(|metric| metric.resource.as_ref())
        .find(|resource| resource.name == "cpu")
        .and_then(|resource| resource.target.average_utilization);
    assert_eq!(cpu, Some(70), "HPA cpu averageUtilization");
}

#[test]
fn k8s_namespace_config_and_secrets() {
    let manifests = manifests();
    require(&manifests, "Namespace", "journal");
    let config: ConfigData = require(&manifests, "ConfigMap", "journal-config").typed();
    let secret: ConfigData = require(&manifests, "Secret", "journal-secrets").typed();
    let secret_keys: BTreeSet<&str> = secret
        .string_data
        .keys()
        .chain(secret.data.keys())
        .map(String::as_str)
        .collect();
    for var in SECRET_VARS {
        assert!(
            secret_keys.contains(var),
            "Secret journal-secrets lacks {var}"
        );
        assert!(
            !config.data.contains_key(var),
            "{var} is a secret: it belongs in journal-secrets, not journal-config"
        );
    }
    for var in COMMON_VARS.iter().chain(&API_VARS).chain(&NOTIFIER_VARS) {
        if PER_SERVICE_VARS.contains(var) {
            continue; // in each Deployment (k8s_each_service_has_its_own_role_and_nats_user)
        }
        assert!(
            config.data.contains_key(*var) || secret_keys.contains(*var),
            "{var} is in neither journal-config nor journal-secrets"
        );
    }
    assert!(
        !config.data.contains_key("PORT"),
        "PORT differs per service: set it in each Deployment, not in the shared ConfigMap"
    );
}

/// Variables each Deployment sets for itself: its own database role and NATS user.
const PER_SERVICE_VARS: [&str; 4] = [
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

#[derive(Debug, Deserialize)]
struct Job {
    spec: JobSpec,
}

#[derive(Debug, Deserialize)]
struct JobSpec {
    template: JobTemplate,
}

#[derive(Debug, Deserialize)]
struct JobTemplate {
    spec: JobPodSpec,
}

#[derive(Debug, Deserialize)]
struct JobPodSpec {
    containers: Vec<JobContainer>,
}

#[derive(Debug, Deserialize)]
struct JobContainer {
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
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
    use platform::config::EnvReader;

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

#[test]
fn k8s_objects_are_labelled_and_unique() {
    let manifests = manifests();
    let mut seen = BTreeSet::new();
    for manifest in &manifests {
        let key = (
            manifest.object.kind.clone(),
            manifest.object.metadata.name.clone(),
        );
        assert!(seen.insert(key.clone()), "{key:?} is defined twice");
        // Scrape annotations belong on pods; a Deployment-level one is ignored by Prometheus.
        assert!(
            !manifest
                .object
                .metadata
                .annotations
                .contains_key("prometheus.io/scrape")
                || manifest.object.kind != "Deployment",
            "{}: put prometheus.io/scrape on the pod template",
            manifest.file
        );
        assert_eq!(
            manifest
                .object
                .metadata
                .labels
                .get("app.kubernetes.io/part-of")
                .map(String::as_str),
            Some("journal"),
            "{}: {} {} lacks the app.kubernetes.io/part-of label",
            manifest.file,
            manifest.object.kind,
            manifest.object.metadata.name
        );
    }
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization: Kustomization = parse_yaml(
        &read("deploy/k8s/kustomization.yaml"),
        "deploy/k8s/kustomization.yaml",
    );
    let listed: BTreeSet<String> = kustomization.resources.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        kustomization.resources.len(),
        "kustomization lists a file twice"
    );
    let files: BTreeSet<String> = k8s_files()
        .into_iter()
        .filter(|file| !file.starts_with("kustomization."))
        .collect();
    assert_eq!(
        listed, files,
        "deploy/k8s/kustomization.yaml must list every manifest in deploy/k8s"
    );
}

// ---------------------------------------------------------------------------------------------
// deploy/otel/collector.yaml

#[derive(Debug, Deserialize)]
struct Collector {
    receivers: BTreeMap<String, Value>,
    #[serde(default)]
    processors: BTreeMap<String, Value>,
    exporters: BTreeMap<String, Value>,
    service: CollectorService,
}

#[derive(Debug, Deserialize)]
struct CollectorService {
    pipelines: BTreeMap<String, Pipeline>,
}

#[derive(Debug, Deserialize)]
struct Pipeline {
    receivers: Vec<String>,
    #[serde(default)]
    processors: Vec<String>,
    exporters: Vec<String>,
}

#[test]
fn otel_collector_has_a_traces_pipeline_to_jaeger() {
    let collector: Collector = parse_yaml(
        &read("deploy/otel/collector.yaml"),
        "deploy/otel/collector.yaml",
    );
    let traces = collector
        .service
        .pipelines
        .get("traces")
        .ok_or("deploy/otel/collector.yaml has no traces pipeline")
        .unwrap();
    assert!(
        traces.receivers.iter().any(|r| r == "otlp"),
        "traces receive OTLP"
    );
    assert!(
        traces.exporters.iter().any(|e| e == "otlp"),
        "traces export over OTLP"
    );

    // Every component a pipeline names is defined (the collector refuses to start otherwise).
    for (pipeline_name, pipeline) in &collector.service.pipelines {
        for (kind, names, defined) in [
            ("receiver", &pipeline.receivers, &collector.receivers),
            ("processor", &pipeline.processors, &collector.processors),
            ("exporter", &pipeline.exporters, &collector.exporters),
        ] {
            for name in names {
                assert!(
                    defined.contains_key(name),
                    "pipeline {pipeline_name} uses {kind} `{name}`, which is not defined"
                );
            }
        }
    }

    let protocols = &collector.receivers["otlp"]["protocols"];
    assert!(
        protocols.get("http").is_some() && protocols.get("grpc").is_some(),
        "the otlp receiver must accept both http and grpc: {protocols:?}"
    );
    let otlp = &collector.exporters["otlp"];
    assert_eq!(
        otlp["endpoint"].as_str(),
        Some("jaeger:4317"),
        "otlp exporter endpoint"
    );
    assert_eq!(
        otlp["tls"]["insecure"].as_bool(),
        Some(true),
        "otlp exporter to jaeger without TLS"
    );
}

// ---------------------------------------------------------------------------------------------
// Every variable a manifest sets is one a service reads

/// The variables `service`'s configuration reader asks for when given `env` (what a manifest
/// sets: some variables are read only when another is set, such as `GOOGLE_CLIENT_SECRET`
/// with `GOOGLE_CLIENT_ID`), in development and in production, taken from the reader itself
/// rather than a list kept by hand.
fn variables_read(service: &str, env: &BTreeMap<String, String>) -> BTreeSet<String> {
    use platform::config::{EnvReader, NamesRead};
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
