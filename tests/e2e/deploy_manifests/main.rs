//! The deployment files agree with the services: docker-compose.yml, deploy/Dockerfile,
//! deploy/k8s/*.yaml and deploy/otel/collector.yaml are parsed with a real YAML parser into
//! typed structs (only the fields checked here) and checked against the five binaries' names
//! and ports. When `docker-compose` is installed, the compose file is also validated by it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod compose;
mod compose_model;
mod credentials;
mod dockerfile;
mod fixtures;
mod k8s;
mod k8s_model;
mod otel_collector;
mod variables;
