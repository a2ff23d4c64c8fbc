//! Connect-time topic checks: source topics must exist; dead-letter and retry topics are
//! created when missing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use outrigger_core::SourceError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

use crate::config::KafkaSettings;
use crate::dead_letter::Route;
use crate::logging::LogContext;
use crate::properties;

/// How long connect waits for the cluster's metadata and for a topic creation.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Replication factor of a created dead-letter topic: -1 asks for the broker's
/// `default.replication.factor`, which is what the operator chose for durable topics.
const DEAD_LETTER_REPLICATION: i32 = -1;

/// Checks the source topics and makes sure every dead-letter topic (routes' too) and retry
/// topic exists; returns
/// where each source topic's records go.
///
/// A missing dead-letter or retry topic is created with as many partitions as its source topic
/// (the largest of them when several sources share it), so that the records of a partition
/// can keep its number and order.
pub(crate) async fn prepare(config: &KafkaSettings) -> Result<Routes, SourceError> {
    let admin = AdminClient::from_config_and_context(&properties::admin(config), LogContext)
        .map_err(|e| SourceError::Rejected(format!("invalid Kafka client settings: {e}")))?;
    let admin = Arc::new(admin);
    let existing = partition_counts(&admin, &config.bootstrap_servers).await?;

    let missing: Vec<&str> = config
        .topics
        .iter()
        .filter(|t| !existing.contains_key(t.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(SourceError::Rejected(format!(
            "Kafka topic {} does not exist",
            missing.join(", ")
        )));
    }

    // Each dead-letter and retry topic with the partition count it should have.
    let mut wanted: BTreeMap<String, i32> = BTreeMap::new();
    let derived = config
        .topics
        .iter()
        .map(|topic| (topic.clone(), config.dead_letter_topic_for(topic)))
        .chain(config.retry_topics());
    for (source, topic) in derived {
        let count = wanted.entry(topic).or_default();
        *count = (*count).max(existing[source.as_str()]);
    }
    // A route may take records of any source topic: its topic gets the most partitions.
    let largest = config
        .topics
        .iter()
        .map(|t| existing[t.as_str()])
        .max()
        .unwrap_or(1);
    for topic in &config.route_dead_letter_topics {
        let count = wanted.entry(topic.clone()).or_default();
        *count = (*count).max(largest);
    }
    let mut created = HashMap::new();
    for (topic, partitions) in &wanted {
        if !existing.contains_key(topic.as_str()) {
            create(&admin, topic, *partitions).await?;
            created.insert(topic.clone(), *partitions);
        }
    }
    let partitions_of = |topic: &str| {
        existing
            .get(topic)
            .or_else(|| created.get(topic))
            .copied()
            .unwrap_or(1)
    };
    let retry = config
        .retry_topics()
        .into_iter()
        .map(|(_, topic)| {
            let partitions = partitions_of(&topic);
            (topic, partitions)
        })
        .collect();

    let dead_letter = config
        .topics
        .iter()
        .map(|source| {
            let topic = config.dead_letter_topic_for(source);
            let partitions = partitions_of(&topic);
            (source.clone(), Route { topic, partitions })
        })
        .collect();
    let named = config
        .route_dead_letter_topics
        .iter()
        .map(|topic| {
            let partitions = partitions_of(topic);
            (topic.clone(), partitions)
        })
        .collect();
    Ok(Routes {
        dead_letter,
        named,
        retry,
    })
}

/// Where the records of the source topics go when they leave them for another topic.
#[derive(Debug)]
pub(crate) struct Routes {
    /// The dead-letter route of each source topic.
    pub(crate) dead_letter: HashMap<String, Route>,
    /// The partition count of each dead-letter topic a route names.
    pub(crate) named: HashMap<String, i32>,
    /// The partition count of each retry topic.
    pub(crate) retry: HashMap<String, i32>,
}

/// Every topic of the cluster with its partition count. All topics rather than only ours: a
/// metadata request naming a missing topic would make some brokers create it.
async fn partition_counts(
    admin: &Arc<AdminClient<LogContext>>,
    bootstrap: &str,
) -> Result<HashMap<String, i32>, SourceError> {
    let admin = admin.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        admin.inner().fetch_metadata(None, ADMIN_TIMEOUT).map(|m| {
            m.topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
                .collect::<HashMap<_, _>>()
        })
    })
    .await
    .map_err(|e| SourceError::Connection(format!("fetching Kafka metadata: {e}")))?;
    metadata.map_err(|e| {
        SourceError::Connection(format!("fetching Kafka metadata from {bootstrap}: {e}"))
    })
}

/// Creates a dead-letter or retry topic; one created meanwhile by another replica is fine.
async fn create(
    admin: &AdminClient<LogContext>,
    topic: &str,
    partitions: i32,
) -> Result<(), SourceError> {
    let new = NewTopic::new(
        topic,
        partitions.max(1),
        TopicReplication::Fixed(DEAD_LETTER_REPLICATION),
    );
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let refused =
        |why: String| SourceError::Rejected(format!("could not create topic {topic}: {why}"));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| refused(e.to_string()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(refused(code.to_string())),
        }
    }
    info!(topic, partitions, "Created a Kafka topic.");
    Ok(())
}
