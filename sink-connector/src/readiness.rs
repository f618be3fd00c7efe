//! Readiness: what `/readyz` says, from the two sides the sink depends on —
//! PostgreSQL (writer 0's connection) and Kafka.

use std::sync::{Arc, Mutex};

use connector_common::telemetry::Health;

/// Readiness from two sides: PostgreSQL and Kafka. `/readyz` is 200 only
/// when both are fine, and otherwise names what is wrong.
///
/// PostgreSQL is writer 0's connection: that writer retries until its part
/// commits and writes the parts the others hand back, so records flow as
/// long as it works; the other writers' failures only cost parallelism and
/// are not reported here (see [`crate::postgres::writer`]).
#[derive(Debug, Clone)]
pub struct Readiness {
    health: Health,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// Fine (`None`) or the problem.
    postgres: Option<String>,
    kafka: Option<String>,
}

impl Readiness {
    /// Not ready until both PostgreSQL and Kafka report in.
    pub fn new(health: Health) -> Self {
        let r = Self {
            health,
            state: Arc::new(Mutex::new(State {
                postgres: Some("PostgreSQL: not connected yet".to_owned()),
                kafka: Some("Kafka: no broker reached yet".to_owned()),
            })),
        };
        r.publish();
        r
    }

    /// PostgreSQL is fine (`None`) or not (the reason).
    pub fn set_postgres(&self, problem: Option<String>) {
        self.state.lock().expect("readiness lock").postgres = problem;
        self.publish();
    }

    /// Kafka is fine (`None`) or not (the reason).
    pub fn set_kafka(&self, problem: Option<String>) {
        self.state.lock().expect("readiness lock").kafka = problem;
        self.publish();
    }

    fn publish(&self) {
        let s = self.state.lock().expect("readiness lock");
        match (&s.postgres, &s.kafka) {
            (None, None) => self.health.set_ready(),
            (Some(a), None) | (None, Some(a)) => self.health.set_not_ready(a.clone()),
            (Some(a), Some(b)) => self.health.set_not_ready(format!("{a}; {b}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_postgres_and_kafka_are() {
        let health = Health::new();
        let r = Readiness::new(health.clone());
        let reason = || health.not_ready_reason();
        assert_eq!(
            reason().as_deref(),
            Some("PostgreSQL: not connected yet; Kafka: no broker reached yet")
        );
        r.set_kafka(None);
        assert_eq!(reason().as_deref(), Some("PostgreSQL: not connected yet"));
        r.set_postgres(None);
        assert_eq!(reason(), None);
        r.set_postgres(Some("PostgreSQL at h: down".to_owned()));
        assert_eq!(reason().as_deref(), Some("PostgreSQL at h: down"));
        r.set_postgres(None);
        r.set_kafka(Some("Kafka: down".to_owned()));
        assert_eq!(reason().as_deref(), Some("Kafka: down"));
    }
}
