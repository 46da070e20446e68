//! deploy/k8s as the tests read it: the objects, their specs and lookups.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml::Value;

use crate::fixtures::{read, repo_root};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Object {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) metadata: Metadata,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Deployment {
    pub(crate) spec: DeploymentSpec,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeploymentSpec {
    pub(crate) replicas: Option<u32>,
    pub(crate) selector: LabelSelector,
    pub(crate) template: PodTemplate,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LabelSelector {
    #[serde(default)]
    pub(crate) match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PodTemplate {
    pub(crate) metadata: TemplateMetadata,
    pub(crate) spec: PodSpec,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TemplateMetadata {
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpec {
    pub(crate) containers: Vec<Container>,
    pub(crate) termination_grace_period_seconds: Option<u64>,
    pub(crate) security_context: Option<PodSecurityContext>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSecurityContext {
    pub(crate) run_as_non_root: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Container {
    pub(crate) name: String,
    pub(crate) image: String,
    #[serde(default)]
    pub(crate) ports: Vec<ContainerPort>,
    #[serde(default)]
    pub(crate) env: Vec<EnvVar>,
    #[serde(default)]
    pub(crate) env_from: Vec<EnvFrom>,
    pub(crate) readiness_probe: Option<Probe>,
    pub(crate) liveness_probe: Option<Probe>,
    pub(crate) resources: Option<Resources>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerPort {
    pub(crate) name: Option<String>,
    pub(crate) container_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvVar {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
    pub(crate) value_from: Option<EnvVarSource>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvVarSource {
    pub(crate) secret_key_ref: Option<SecretKeyRef>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SecretKeyRef {
    pub(crate) name: String,
    pub(crate) key: String,
}

impl EnvVar {
    /// The Secret and key the value comes from, when it comes from one.
    pub(crate) fn secret_key(&self) -> Option<(&str, &str)> {
        let reference = self.value_from.as_ref()?.secret_key_ref.as_ref()?;
        Some((reference.name.as_str(), reference.key.as_str()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvFrom {
    pub(crate) config_map_ref: Option<NameRef>,
    pub(crate) secret_ref: Option<NameRef>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NameRef {
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Probe {
    pub(crate) http_get: Option<HttpGet>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HttpGet {
    pub(crate) path: String,
    pub(crate) port: IntOrString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum IntOrString {
    Int(u16),
    String(String),
}

#[derive(Debug, Deserialize)]
pub(crate) struct Resources {
    #[serde(default)]
    pub(crate) requests: BTreeMap<String, Value>,
    #[serde(default)]
    pub(crate) limits: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Service {
    pub(crate) spec: ServiceSpec,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ServiceSpec {
    #[serde(default)]
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) ports: Vec<ServicePort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServicePort {
    pub(crate) port: u16,
    pub(crate) target_port: Option<IntOrString>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Hpa {
    pub(crate) spec: HpaSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HpaSpec {
    pub(crate) scale_target_ref: ScaleTargetRef,
    pub(crate) min_replicas: Option<u32>,
    pub(crate) max_replicas: u32,
    #[serde(default)]
    pub(crate) metrics: Vec<HpaMetric>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScaleTargetRef {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HpaMetric {
    pub(crate) resource: Option<HpaResource>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HpaResource {
    pub(crate) name: String,
    pub(crate) target: HpaTarget,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HpaTarget {
    pub(crate) average_utilization: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConfigData {
    #[serde(default)]
    pub(crate) data: BTreeMap<String, String>,
    #[serde(default, rename = "stringData")]
    pub(crate) string_data: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Kustomization {
    #[serde(default)]
    pub(crate) resources: Vec<String>,
}

/// One YAML document of a manifest file.
pub(crate) struct Manifest {
    pub(crate) file: String,
    pub(crate) object: Object,
    pub(crate) value: Value,
}

impl Manifest {
    pub(crate) fn typed<T: serde::de::DeserializeOwned>(&self) -> T {
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
pub(crate) fn k8s_files() -> BTreeSet<String> {
    std::fs::read_dir(k8s_dir())
        .expect("deploy/k8s exists")
        .map(|entry| entry.expect("readable dir entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect()
}

/// Every Kubernetes object in deploy/k8s (all documents of every file but the kustomization).
pub(crate) fn manifests() -> Vec<Manifest> {
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

pub(crate) fn require<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Manifest {
    find(manifests, kind, name)
        .ok_or_else(|| format!("deploy/k8s has no {kind} named `{name}`"))
        .unwrap()
}

/// Whether a (non-empty) label selector picks objects with these labels.
pub(crate) fn selects(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

/// The port number a probe or Service target names, resolving a named port.
pub(crate) fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(name) => container
            .ports
            .iter()
            .find(|candidate| candidate.name.as_deref() == Some(name.as_str()))
            .map(|candidate| candidate.container_port),
    }
}

pub(crate) fn check_probe(
    probe: Option<&Probe>,
    path: &str,
    port: u16,
    container: &Container,
    what: &str,
) {
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

#[derive(Debug, Deserialize)]
pub(crate) struct Job {
    pub(crate) spec: JobSpec,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobSpec {
    pub(crate) template: JobTemplate,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobTemplate {
    pub(crate) spec: JobPodSpec,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobPodSpec {
    pub(crate) containers: Vec<JobContainer>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobContainer {
    #[serde(default)]
    pub(crate) command: Vec<String>,
    #[serde(default)]
    pub(crate) env: Vec<EnvVar>,
}
