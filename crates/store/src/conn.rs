//! A connection inside one transaction, and the statements run on it. The shape follows
//! sqlx's (`query("...").bind(x).execute(conn)`), so store code reads the same on both engines.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::postgres::{Guard, Tx};
use crate::value::{FromRow, Param, Row, Value};
use crate::{Backend, StoreError};

/// The connection an operation runs on, inside the transaction [`crate::Store::transact`]
/// opened. On SQLite every call completes at once on the store's owner thread; on PostgreSQL
/// a statement whose answer is read is a round trip (pipelined with what went before it).
pub struct Conn {
    inner: Inner,
}

enum Inner {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Box<Tx>),
}

impl Conn {
    pub(crate) fn sqlite(conn: Arc<Mutex<rusqlite::Connection>>) -> Self {
        Self {
            inner: Inner::Sqlite(conn),
        }
    }

    pub(crate) fn postgres(tx: Tx) -> Self {
        Self {
            inner: Inner::Postgres(Box::new(tx)),
        }
    }

    pub(crate) fn into_postgres(self) -> Option<Tx> {
        match self.inner {
            Inner::Postgres(tx) => Some(*tx),
            Inner::Sqlite(_) => None,
        }
    }

    /// Whether the operation runs pipelined ([`crate::Store::transact_pipelined`]).
    pub fn pipelined(&self) -> bool {
        match &self.inner {
            Inner::Postgres(tx) => tx.pipelined(),
            Inner::Sqlite(_) => false,
        }
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs several `;`-separated statements without parameters (migrations).
    pub async fn execute_script(&mut self, sql: &str) -> Result<(), StoreError> {
        match &mut self.inner {
            Inner::Sqlite(conn) => Ok(conn.lock().execute_batch(sql)?),
            Inner::Postgres(tx) => tx.script(sql).await,
        }
    }

    /// Runs `statement`, a write whose answer the operation does not read, as part of the
    /// transaction. On PostgreSQL it may wait to travel with the next statement or the COMMIT
    /// (no round trip of its own); if it fails, the transaction fails and nothing is written.
    /// On SQLite it runs at once.
    pub async fn defer(&mut self, statement: Query) -> Result<(), StoreError> {
        match &mut self.inner {
            Inner::Postgres(tx) if tx.can_defer() => {
                crate::stats::statement();
                tx.defer((statement.sql, statement.params), None);
                Ok(())
            }
            _ => statement.execute(self).await.map(drop),
        }
    }

    /// Runs `statement`, a write that should change exactly `rows` rows, or a read that should
    /// answer them, and answers whether it did. The rows it answers are what count: a write
    /// says what it changed with `RETURNING`.
    ///
    /// In a pipelined transaction ([`crate::Store::transact_pipelined`], PostgreSQL) it waits
    /// for the COMMIT and answers `true` at once; the server checks the count, and if it
    /// differs the whole transaction rolls back and the store runs the operation again,
    /// unpipelined, where this answers the truth. So an operation reads the answer as it would
    /// any other: `if !tx.guarded(...).await? { return Err(refusal) }`.
    pub async fn guarded(&mut self, statement: Query, rows: u64) -> Result<bool, StoreError> {
        match &mut self.inner {
            Inner::Postgres(tx) if tx.pipelined() => {
                crate::stats::statement();
                tx.defer((statement.sql, statement.params), Some(Guard::Rows(rows)));
                Ok(true)
            }
            // The rows it answers, as the server's guard counts them.
            _ => {
                let answered = self
                    .fetch(statement.sql, statement.params, usize::MAX)
                    .await?;
                Ok(u64::try_from(answered.len()).is_ok_and(|n| n == rows))
            }
        }
    }

    /// Runs the request's prelude on SQLite, at once: it must change exactly one row, or the
    /// transaction fails with [`StoreError::PreludeRefused`] and writes nothing. (On
    /// PostgreSQL the server checks it as a guard, with the next write.)
    pub(crate) async fn prelude(&mut self, statement: Query) -> Result<(), StoreError> {
        match statement.execute(self).await? {
            1 => Ok(()),
            _ => Err(StoreError::PreludeRefused),
        }
    }

    /// Runs `statement` as the transaction's last: on PostgreSQL it travels with what waits
    /// and with the COMMIT, in one write, and its answer is the transaction's outcome (an error
    /// means nothing was written). Nothing may run on `tx` after it, and the operation must
    /// answer `Ok` unless this failed: on PostgreSQL the transaction has committed.
    async fn run_last(
        &mut self,
        sql: Cow<'static, str>,
        params: Vec<Param>,
        rows: Option<usize>,
    ) -> Result<(Vec<Row>, u64), StoreError> {
        match (&mut self.inner, rows) {
            (Inner::Postgres(tx), _) => {
                crate::stats::statement();
                let answer = tx
                    .finish(Some((sql, params)))
                    .await?
                    .ok_or(StoreError::NoRow)?;
                let mut answered = answer.rows;
                answered.truncate(rows.unwrap_or(0));
                Ok((answered, answer.changed))
            }
            (Inner::Sqlite(_), None) => Ok((Vec::new(), self.execute(sql, params).await?)),
            (Inner::Sqlite(_), Some(limit)) => Ok((self.fetch(sql, params, limit).await?, 0)),
        }
    }

    async fn execute(
        &mut self,
        sql: Cow<'static, str>,
        params: Vec<Param>,
    ) -> Result<u64, StoreError> {
        crate::stats::statement();
        match &mut self.inner {
            Inner::Sqlite(conn) => {
                let conn = conn.lock();
                let mut statement = prepare_sqlite(&conn, &sql, &params)?;
                // Stepped to the end rather than `execute`d: a statement with RETURNING
                // answers rows and still counts its changes.
                let mut rows = statement.raw_query();
                while rows.next()?.is_some() {}
                drop(rows);
                Ok(conn.changes())
            }
            Inner::Postgres(tx) => Ok(tx.run((sql, params)).await?.changed),
        }
    }

    async fn fetch(
        &mut self,
        sql: Cow<'static, str>,
        params: Vec<Param>,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        crate::stats::statement();
        match &mut self.inner {
            Inner::Sqlite(conn) => {
                let conn = conn.lock();
                let mut statement = prepare_sqlite(&conn, &sql, &params)?;
                let width = statement.column_count();
                let mut rows = statement.raw_query();
                let mut answered = Vec::new();
                while let Some(row) = rows.next()? {
                    if answered.len() < limit {
                        let values = (0..width)
                            .map(|i| row.get_ref(i).map(Value::from))
                            .collect::<Result<_, _>>()?;
                        answered.push(Row(values));
                    }
                }
                Ok(answered)
            }
            Inner::Postgres(tx) => {
                let mut rows = tx.run((sql, params)).await?.rows;
                rows.truncate(limit);
                Ok(rows)
            }
        }
    }
}

/// The statement from the connection's cache, its `$n` parameters bound by their number, as
/// PostgreSQL reads them (SQLite itself numbers `$n` names in order of first appearance).
fn prepare_sqlite<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    params: &[Param],
) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    for index in 1..=statement.parameter_count() {
        let number = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(index);
        let param = params.get(number - 1).ok_or_else(|| {
            StoreError::Decode(format!("the statement uses ${number}, which is not bound"))
        })?;
        statement.raw_bind_parameter(index, param)?;
    }
    Ok(statement)
}

/// A statement with its parameters: `query("UPDATE ... WHERE id = $1").bind(id)`.
#[must_use = "a query does nothing until it is executed or fetched"]
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    sql: Cow<'static, str>,
    params: Vec<Param>,
}

/// A statement whose rows are read as `R` (a tuple of columns, or [`Row`]).
#[must_use = "a query does nothing until it is fetched"]
#[derive(Debug, Clone)]
pub struct QueryAs<R> {
    query: Query,
    row: PhantomData<fn() -> R>,
}

/// A statement in PostgreSQL's dialect of parameters (`$1`, `$2`), valid on both engines.
pub fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        params: Vec::new(),
    }
}

/// A statement whose rows are read as `R`.
pub fn query_as<R: FromRow>(sql: impl Into<Cow<'static, str>>) -> QueryAs<R> {
    QueryAs {
        query: query(sql),
        row: PhantomData,
    }
}

impl Query {
    pub(crate) fn into_parts(self) -> crate::postgres::Statement {
        (self.sql, self.params)
    }

    /// Binds the next parameter (`$1`, then `$2`...).
    pub fn bind(mut self, value: impl Into<Param>) -> Self {
        self.params.push(value.into());
        self
    }

    /// Runs it; answers how many rows it changed.
    pub async fn execute(self, conn: &mut Conn) -> Result<u64, StoreError> {
        conn.execute(self.sql, self.params).await
    }

    pub async fn fetch_all(self, conn: &mut Conn) -> Result<Vec<Row>, StoreError> {
        conn.fetch(self.sql, self.params, usize::MAX).await
    }

    /// Runs it as the transaction's last statement: on PostgreSQL it travels with the
    /// COMMIT, in one write (see [`Conn::defer`] for what else may). Nothing runs after it;
    /// an error means the transaction wrote nothing.
    pub async fn execute_last(self, conn: &mut Conn) -> Result<u64, StoreError> {
        Ok(conn.run_last(self.sql, self.params, None).await?.1)
    }

    /// [`Self::fetch_all`] as the transaction's last statement ([`Self::execute_last`]).
    pub async fn fetch_all_last(self, conn: &mut Conn) -> Result<Vec<Row>, StoreError> {
        Ok(conn
            .run_last(self.sql, self.params, Some(usize::MAX))
            .await?
            .0)
    }

    pub async fn fetch_optional(self, conn: &mut Conn) -> Result<Option<Row>, StoreError> {
        Ok(conn.fetch(self.sql, self.params, 1).await?.pop())
    }

    pub async fn fetch_one(self, conn: &mut Conn) -> Result<Row, StoreError> {
        self.fetch_optional(conn).await?.ok_or(StoreError::NoRow)
    }
}

impl<R: FromRow> QueryAs<R> {
    pub fn bind(mut self, value: impl Into<Param>) -> Self {
        self.query = self.query.bind(value);
        self
    }

    pub async fn fetch_all(self, conn: &mut Conn) -> Result<Vec<R>, StoreError> {
        self.query
            .fetch_all(conn)
            .await?
            .into_iter()
            .map(R::from_row)
            .collect()
    }

    pub async fn fetch_optional(self, conn: &mut Conn) -> Result<Option<R>, StoreError> {
        self.query
            .fetch_optional(conn)
            .await?
            .map(R::from_row)
            .transpose()
    }

    pub async fn fetch_one(self, conn: &mut Conn) -> Result<R, StoreError> {
        R::from_row(self.query.fetch_one(conn).await?)
    }

    /// [`Self::fetch_all`] as the transaction's last statement ([`Query::execute_last`]).
    pub async fn fetch_all_last(self, conn: &mut Conn) -> Result<Vec<R>, StoreError> {
        self.query
            .fetch_all_last(conn)
            .await?
            .into_iter()
            .map(R::from_row)
            .collect()
    }

    /// [`Self::fetch_optional`] as the transaction's last statement.
    pub async fn fetch_optional_last(self, conn: &mut Conn) -> Result<Option<R>, StoreError> {
        let (mut rows, _) = conn
            .run_last(self.query.sql, self.query.params, Some(1))
            .await?;
        rows.pop().map(R::from_row).transpose()
    }

    /// [`Self::fetch_one`] as the transaction's last statement.
    pub async fn fetch_one_last(self, conn: &mut Conn) -> Result<R, StoreError> {
        self.fetch_optional_last(conn)
            .await?
            .ok_or(StoreError::NoRow)
    }
}
