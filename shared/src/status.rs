//! The closed sets pgfleet's records move through — job kinds, job, tenant, backup and
//! rollout statuses — each an enum whose one list (`ALL`) drives parsing, validation
//! messages, metrics pre-fill and docs. Stored as text in the catalog (the tables' CHECK
//! constraints hold the same lists), so each enum maps to and from `text` for sqlx, to
//! lowercase strings for serde, and parses from the CLI and API with a message that lists
//! what is allowed.

/// Declares a text-backed enum: `as_str`, `parse`, `ALL`, `Display`, `FromStr`, serde and
/// sqlx (`text`) support.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in their documented order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == raw)
            }

            /// "a, b or c": for messages that say what is allowed.
            pub fn choices() -> String {
                let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                match all.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                    _ => all.join(""),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(raw: &str) -> Result<Self, String> {
                Self::parse(raw).ok_or_else(|| {
                    format!(
                        "unknown {} {:?}: use {}",
                        $what,
                        raw.chars().take(64).collect::<String>(),
                        Self::choices()
                    )
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let raw = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                Ok(raw.parse()?)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}

text_enum!(
    /// The kinds of job this version of pgfleet runs; each is a routing key and a queue.
    JobKind, "job kind" {
        Provision => "provision",
        Backup => "backup",
        Prune => "prune",
        Restore => "restore",
        Delete => "delete",
        Migrate => "migrate",
        /// Copy a self-hosted tenant to another server, verify, switch, drop the old copy.
        Move => "move",
    }
);

text_enum!(
    /// Where a job is in its life (DESIGN.md "Job lifecycle").
    JobStatus, "job status" {
        /// Recorded, waiting to be claimed (new, retrying after a backoff, or handed back).
        Queued => "queued",
        /// Claimed by a worker holding a live lease.
        Running => "running",
        Succeeded => "succeeded",
        /// A permanent error: retrying could not help.
        Failed => "failed",
        /// Out of attempts.
        Dead => "dead",
    }
);

impl JobStatus {
    /// Succeeded, failed or dead: nothing more will happen to the job.
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Dead)
    }
}

text_enum!(
    /// A tenant's life: provisioned once, active until deleted; suspended (its role may
    /// not log in) and moving (to another server) in between.
    TenantStatus, "tenant status" {
        Provisioning => "provisioning",
        Active => "active",
        Suspended => "suspended",
        Moving => "moving",
        Deleting => "deleting",
        Deleted => "deleted",
    }
);

text_enum!(
    /// What a tenant server is: a Postgres server pgfleet administers (a role and a
    /// database per tenant), or a Neon account and region (a Neon project per tenant).
    ServerKind, "server kind" {
        Postgres => "postgres",
        Neon => "neon",
    }
);

text_enum!(
    /// Whether a server takes new tenants.
    ServerStatus, "server status" {
        /// Takes new tenants (while not full).
        Active => "active",
        /// Keeps its tenants, takes no new ones.
        Draining => "draining",
        /// Gone; its row is kept for deleted tenants' records only.
        Removed => "removed",
    }
);

text_enum!(
    /// One backup attempt's object (see `catalog::backups`).
    BackupStatus, "backup status" {
        /// Being written.
        Running => "running",
        /// Stored and verified.
        Succeeded => "succeeded",
        /// Nothing under its key.
        Failed => "failed",
        /// Chosen for deletion; its object may still exist.
        Pruning => "pruning",
        /// Its object was deleted.
        Pruned => "pruned",
    }
);

text_enum!(
    /// A migration rollout.
    RolloutStatus, "rollout status" {
        /// Jobs in flight.
        Running => "running",
        /// Stopped: a canary failed or too many tenants failed.
        Halted => "halted",
        /// Every tenant's job finished (some may have failed).
        Done => "done",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_says_what_is_allowed() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(*status));
        }
        let err = "sleeping".parse::<JobStatus>().unwrap_err();
        assert_eq!(
            err,
            "unknown job status \"sleeping\": use queued, running, succeeded, failed or dead"
        );
        assert_eq!(
            serde_json::to_string(&TenantStatus::Active).unwrap(),
            "\"active\""
        );
        assert!(serde_json::from_str::<JobKind>("\"explode\"").is_err());
        assert!(JobStatus::Dead.is_finished() && !JobStatus::Running.is_finished());
    }
}
