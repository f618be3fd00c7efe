//! Secrets in the configuration, in types that cannot print them.
//!
//! - [`Secret`] holds one secret value (a SASL password). Its `Debug`,
//!   `Display` and `Serialize` all give [`MASK`]; only [`Secret::expose`]
//!   gives the value, for the one place that hands it to a client library.
//! - [`SecretMap`] is a string map (request headers, `[kafka.options]`) whose
//!   entries are secret *by meaning*: a [`MaskRule`] decides from the name
//!   which values are credentials ([`HeaderRule`], [`KafkaOptionRule`]). Its
//!   `Debug` and `Serialize` mask those values; reading the map (it derefs to
//!   a `BTreeMap`) gives the real ones.
//! - [`ConnectionString`] is a PostgreSQL connection string (URL or
//!   `key=value` form); `Debug`, `Display` and `Serialize` show it with the
//!   password masked ([`mask_connection_string`], which parses the string
//!   the way tokio-postgres does rather than slicing it).
//!
//! `--check-config` renders the configuration through `Serialize`, so what
//! these types mask is masked there too, with no second list of names.

mod connection;
mod headers;
mod kafka_options;
mod map;
mod value;

pub use connection::{mask_connection_string, percent_decoded, ConnectionString};
pub use headers::{HeaderRule, Headers};
pub use kafka_options::{KafkaOptionRule, KafkaOptions};
pub use map::{MaskRule, SecretMap};
pub use value::{Secret, MASK};
