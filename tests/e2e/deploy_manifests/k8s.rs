//! deploy/k8s: the Deployments match the services, the worker's HPA, the namespace, config
//! and secrets, labels and the kustomization.

use std::collections::BTreeSet;

use crate::credentials::PER_SERVICE_VARS;
use crate::fixtures::{API_VARS, APP_SERVICES, COMMON_VARS, NOTIFIER_VARS, parse_yaml, read};
use crate::k8s_model::{
    ConfigData, Deployment, Hpa, IntOrString, Kustomization, Service, check_probe, k8s_files,
    manifests, require, resolve_port, selects,
};

/// Variables that belong in the Kubernetes Secret, never in the ConfigMap.
const SECRET_VARS: [&str; 6] = [
    "SYNC_TOKEN_SECRET",
    "CRON_SECRET",
    "GOOGLE_CLIENT_SECRET",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "SUPRSEND_API_KEY",
];

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
