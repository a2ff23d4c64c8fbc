//! The pipeline end to end on NATS JetStream: the machine's nats-server (or one of the test's
//! own), Redis dedup, the real binary.

mod support;
