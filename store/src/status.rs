//! Statuses as types. Each is stored in a ClickHouse `String` column and answered by the
//! API under the same snake_case name, so both go through [`as_str`](JobStatus::as_str)
//! and [`FromStr`]; SQL compares against the same names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a unit enum with one name per variant, its conversions to and from that name,
/// and serde as that name (a string, also in ClickHouse's binary rows).
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The name stored and answered.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownStatus {
                        kind: stringify!($name),
                        given: text.to_string(),
                        known: [$($text,)+].join(", "),
                    }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A name that is no status of that kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a {kind}; one of: {known}")]
pub struct UnknownStatus {
    kind: &'static str,
    given: String,
    known: String,
}

named_enum! {
    /// What a job's own row says (the `jobs` table).
    JobStatus {
        /// No model existed for its dataset: one is being fitted first.
        Fitting = "fitting",
        /// Its chunks are being sent to the broker.
        Publishing = "publishing",
        /// The broker acknowledged every chunk; `rows` and `chunks` are final.
        Published = "published",
        /// Fitting or publishing failed; `error` says why.
        Failed = "failed",
    }
}

named_enum! {
    /// A job's status with its progress: the row's status, and for a published job how far
    /// the consumers are.
    JobState {
        /// A model is being fitted first.
        Fitting = "fitting",
        /// Chunks are being sent.
        Publishing = "publishing",
        /// Published; the consumers have not finished every chunk.
        Running = "running",
        /// Every chunk has outputs.
        Done = "done",
        /// Every chunk has outputs or was dead-lettered, and some were.
        DoneWithDeadLetters = "done_with_dead_letters",
        /// Fitting or publishing failed.
        Failed = "failed",
    }
}

named_enum! {
    /// What an upload's own row says (the `uploads` table).
    UploadStatus {
        /// Rows are being sent to the broker.
        Publishing = "publishing",
        /// The broker acknowledged every good row.
        Published = "published",
        /// Reading or publishing failed; `error` says why.
        Failed = "failed",
    }
}

impl JobStatus {
    /// Whether the job will not change any more by itself.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Published | Self::Failed)
    }
}

impl JobState {
    /// Whether the job has ended (done, with or without dead letters, or failed).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::DoneWithDeadLetters | Self::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(*state));
        }
        assert_eq!(JobState::DoneWithDeadLetters.as_str(), "done_with_dead_letters");
        let err = "finished".parse::<JobState>().expect_err("unknown");
        assert!(err.to_string().contains("one of: fitting, publishing, running"), "{err}");
        assert_eq!(serde_json::to_string(&UploadStatus::Published).ok(), Some("\"published\"".into()));
    }
}
