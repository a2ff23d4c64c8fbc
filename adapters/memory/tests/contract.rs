//! The source contract on the in-process broker.

use std::time::Duration;

use outrigger_core::{Message, SourceContext};
use outrigger_memory::{Memory, MemoryBroker, MemoryConfig, MemorySource, Outgoing};
use outrigger_testkit::{unique, Faults, Redelivery, SourceFixture};

/// A broker of the test's own with one queue; its dead letters go to `<queue>.dlq`.
struct MemoryContract {
    broker: MemoryBroker,
    queue: String,
}

impl MemoryContract {
    fn dead_letter_queue_name(&self) -> String {
        self.context().dead_letter_for(&self.queue)
    }
}

impl SourceFixture for MemoryContract {
    type Broker = Memory;
    const DEADLINE: Duration = Duration::from_secs(5);
    const REDELIVERY: Redelivery = Redelivery::SameSource;
    const MARKS_REDELIVERED: bool = true;

    async fn new(_faults: Faults) -> Self {
        Self {
            broker: MemoryBroker::new(),
            queue: unique("orders"),
        }
    }

    fn config(&self) -> MemoryConfig {
        MemoryConfig {
            queue: self.queue.clone(),
        }
    }

    fn context(&self) -> SourceContext {
        SourceContext::default()
    }

    // `Memory::connect` refuses: a memory source exists only inside the process that holds
    // the broker.
    async fn source(&self) -> MemorySource {
        self.broker
            .source(&self.queue, &self.dead_letter_queue_name())
    }

    async fn publish(&self, message: Outgoing) {
        self.broker.publish(&self.queue, message);
    }

    async fn dead_letters(&self) -> Vec<Message> {
        self.broker.ready(&self.dead_letter_queue_name())
    }

    async fn break_dead_letter_writes(&self) {
        self.broker.set_fail_dead_letters(true);
    }

    async fn heal_dead_letter_writes(&self) {
        self.broker.set_fail_dead_letters(false);
    }
}

outrigger_testkit::source_contract!(
    MemoryContract,
    skip {
        reconnects_after_a_connection_cut:
            "the memory broker lives in the process: there is no connection to cut",
        dlq_lists_each_dead_letter_with_its_context:
            "the memory broker keeps no dead-letter queue an operator works on (NoDeadLetters)",
        dlq_resubmit_sends_a_marked_copy_back_once:
            "the memory broker keeps no dead-letter queue an operator works on (NoDeadLetters)",
        dlq_purge_discards_the_record:
            "the memory broker keeps no dead-letter queue an operator works on (NoDeadLetters)",
    }
);
