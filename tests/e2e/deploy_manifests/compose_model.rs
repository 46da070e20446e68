//! docker-compose.yml as the tests read it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

use crate::fixtures::{parse_yaml, read, scalar_text};

#[derive(Debug, Deserialize)]
pub(crate) struct Compose {
    pub(crate) services: BTreeMap<String, ComposeService>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ComposeService {
    pub(crate) image: Option<String>,
    pub(crate) build: Option<Build>,
    pub(crate) command: Option<StringOrList>,
    pub(crate) environment: Option<KeyValues>,
    pub(crate) healthcheck: Option<Healthcheck>,
    pub(crate) depends_on: Option<DependsOn>,
    pub(crate) restart: Option<String>,
    #[serde(default)]
    pub(crate) volumes: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl StringOrList {
    pub(crate) fn words(&self) -> Vec<String> {
        match self {
            Self::String(text) => text.split_whitespace().map(str::to_owned).collect(),
            Self::List(items) => items.clone(),
        }
    }
    pub(crate) fn joined(&self) -> String {
        self.words().join(" ")
    }
}

/// `environment` / `args`: a mapping or a list of `KEY=value`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum KeyValues {
    Map(BTreeMap<String, Value>),
    List(Vec<String>),
}

impl KeyValues {
    pub(crate) fn to_map(&self) -> BTreeMap<String, String> {
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
pub(crate) enum Build {
    Context(String),
    Full {
        context: Option<String>,
        dockerfile: Option<String>,
        args: Option<KeyValues>,
    },
}

/// A `build` in its long form.
pub(crate) struct BuildSpec<'a> {
    pub(crate) context: Option<&'a str>,
    pub(crate) dockerfile: Option<&'a str>,
    pub(crate) args: BTreeMap<String, String>,
}

impl Build {
    /// The short form (a bare context) has no args, so it is refused.
    pub(crate) fn spec(&self) -> Result<BuildSpec<'_>, String> {
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
pub(crate) struct Healthcheck {
    pub(crate) test: Option<StringOrList>,
    #[serde(default)]
    pub(crate) disable: bool,
}

impl Healthcheck {
    /// The command, unless the healthcheck is switched off.
    pub(crate) fn command(&self) -> Option<String> {
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
pub(crate) enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Dependency>),
}

#[derive(Debug, Deserialize)]
pub(crate) struct Dependency {
    pub(crate) condition: Option<String>,
}

impl DependsOn {
    /// Each dependency with its condition (`service_started` when none is given).
    pub(crate) fn conditions(&self) -> BTreeMap<String, String> {
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

pub(crate) fn compose() -> Compose {
    parse_yaml(&read("docker-compose.yml"), "docker-compose.yml")
}

pub(crate) fn compose_service<'a>(compose: &'a Compose, name: &str) -> &'a ComposeService {
    compose
        .services
        .get(name)
        .ok_or_else(|| format!("docker-compose.yml has no service `{name}`"))
        .unwrap()
}
