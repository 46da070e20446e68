//! deploy/otel/collector.yaml: a traces pipeline to Jaeger.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

use crate::fixtures::{parse_yaml, read};

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
