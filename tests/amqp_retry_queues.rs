//! Retry mode `queue` on RabbitMQ end to end, through the real binary: what only the delay
//! queues have. The scenario every broker shares is the retry contract (`retry_contract.rs`).
