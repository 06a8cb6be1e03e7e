//! Embedded migrations, applied at start in one transaction. The bookkeeping table is the one
//! sqlx's migrator kept (`_sqlx_migrations`, SHA-384 checksums), so stores written by earlier
//! versions of ctr carry on.

use sha2::{Digest, Sha384};

use crate::conn::{Conn, query, query_as};
use crate::{Backend, StoreError};

/// One embedded schema step: versions only grow, and a step never changes once released.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Why migrations could not be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Schema(String),
}

/// Any number; every replica of every service takes the same lock around its migrations.
const PG_LOCK: i64 = 0x6374_725f_6d69_6772;

pub(crate) async fn migrate(conn: &mut Conn, migrations: &[Migration]) -> Result<(), MigrateError> {
    let backend = conn.backend();
    if backend == Backend::Postgres {
        // Replicas starting together migrate one after the other.
        query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_LOCK)
            .execute(conn)
            .await?;
    }
    conn.execute_script(match backend {
        Backend::Sqlite => {
            "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT \
             CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, checksum BLOB NOT NULL, \
             execution_time BIGINT NOT NULL)"
        }
        Backend::Postgres => {
            "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
             success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)"
        }
    })
    .await?;
    let applied: Vec<(i64, bool, Vec<u8>)> =
        query_as("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(conn)
            .await?;
    for (version, success, checksum) in &applied {
        let Some(known) = migrations.iter().find(|m| m.version == *version) else {
            return Err(MigrateError::Schema(format!(
                "migration {version} was applied by a newer version of this service"
            )));
        };
        if !success {
            return Err(MigrateError::Schema(format!(
                "migration {version} ({}) failed part way once; repair the store by hand",
                known.name
            )));
        }
        if Sha384::digest(known.sql)[..] != checksum[..] {
            return Err(MigrateError::Schema(format!(
                "migration {version} ({}) was applied from a different text than this binary's",
                known.name
            )));
        }
    }
    let mut pending: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !applied.iter().any(|(v, ..)| *v == m.version))
        .collect();
    pending.sort_by_key(|m| m.version);
    for migration in pending {
        let started = std::time::Instant::now();
        conn.execute_script(migration.sql).await?;
        query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, $4)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(Sha384::digest(migration.sql).to_vec())
        .bind(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX))
        .execute(conn)
        .await?;
    }
    Ok(())
}
