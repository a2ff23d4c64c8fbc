//! Loading policies end to end: values, defaults, every error at once, and where each points.

use super::*;

mod env;
mod errors;
mod redis;
mod routes;
mod values;

pub(super) fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_str(text, "policy.toml", std::iter::empty())
}

pub(super) fn load_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    load_str(text, "policy.toml", env)
}

pub(super) fn rejected(text: &str) -> Vec<ConfigError> {
    load(text)
        .expect_err("the policy should be rejected")
        .errors
}

/// (line, column, path, value) of each error, for compact assertions.
pub(super) fn places(errors: &[ConfigError]) -> Vec<(usize, usize, &str, Option<&str>)> {
    errors
        .iter()
        .map(|e| {
            let (line, column) = e.location.expect("error has a location");
            (line, column, e.path.as_str(), e.value.as_deref())
        })
        .collect()
}

pub(super) const MINIMAL: &str = "[source.amqp]\nqueue = \"orders\"\n";

pub(super) const KAFKA_MINIMAL: &str =
    "[source.kafka]\ntopics = [\"orders\"]\ngroup_id = \"orders-service\"\n";
