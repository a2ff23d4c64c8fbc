//! The retry contract (retry mode `queue` end to end through the binary, see
//! `outrigger_testkit::retry`) on every broker that has retry queues: one invocation each.
//!
//! Needs the local RabbitMQ, Redis (dedup, and the Redis Streams source) and nats-server with
//! JetStream, and tansu on PATH for Kafka.

use outrigger_testkit::retry_contract;

retry_contract!(
    kafka,
    outrigger_testkit::retry::fixtures::KafkaRetry,
    env!("CARGO_BIN_EXE_outrigger")
);
retry_contract!(
    amqp,
    outrigger_testkit::retry::fixtures::AmqpRetry,
    env!("CARGO_BIN_EXE_outrigger")
);
retry_contract!(
    redis_streams,
    outrigger_testkit::retry::redis_streams::RedisStreamsRetry,
    env!("CARGO_BIN_EXE_outrigger")
);
retry_contract!(
    nats,
    outrigger_testkit::retry::nats::NatsRetry,
    env!("CARGO_BIN_EXE_outrigger")
);
