//! PostgreSQL through tokio-postgres, pipelined: what a transaction sends without needing an
//! answer first goes out in the same write as the next statement, so a transaction costs one
//! round trip per statement whose answer it reads, plus its COMMIT; a pipelined one
//! ([`crate::Store::transact_pipelined`]) that reads no answer before its last statement costs
//! one round trip in all.
//!
//! - `BEGIN` travels with the transaction's first statement.
//! - Each statement of a transaction travels with `SELECT txid_current_if_assigned()`, until the
//!   transaction has an id: a COMMIT whose answer is lost is settled by asking the server
//!   about that id (`txid_status`). A read-only transaction never gets one, so its COMMIT
//!   writes nothing to the log. A transaction ended in one write asks `txid_current()` first
//!   in that write: when the connection breaks before even that answer arrives, the outcome is
//!   [`StoreError::CommitUnknown`], never a guess.
//! - Statements deferred by the operation ([`crate::Conn::defer`]) travel with the next
//!   statement or with the COMMIT.
//! - Guarded statements ([`crate::Conn::guarded`], and the request's prelude) are checked by
//!   the server: each runs wrapped in a query that fails, naming the guard, unless it answered
//!   the rows it should. The failure aborts the transaction there, so the COMMIT already sent
//!   behind it rolls back, and no answer has to come back before the COMMIT is sent.
//! - The transaction's last statement ([`crate::Query::execute_last`] and the `fetch_*_last`
//!   reads) travels with the COMMIT.
//! - Statements are prepared once per connection, with their parameters' types, and kept
//!   (at most [`MAX_PREPARED`] per connection): the server parses and plans a statement once,
//!   not at every execution. The statements a write needs that are new to the connection are
//!   prepared together, in one round trip, before it.

use std::borrow::Cow;
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use futures::StreamExt as _;
use futures::future::{BoxFuture, FutureExt as _, OptionFuture, try_join_all};
use tokio_postgres::NoTls;
use tokio_postgres::error::Severity;
use tokio_postgres::types::{ToSql, Type};

use crate::value::{Param, Row, Value};
use crate::{StoreError, stats};

/// Connections per store (per service process).
const MAX_CONNECTIONS: usize = 16;
/// The most statements a connection keeps prepared; past it, it forgets them all (the
/// statements built for a varying number of rows are the only ones that vary).
const MAX_PREPARED: usize = 512;
/// How long an operation waits for a connection, or for a new one to be made.
const WAIT: Duration = Duration::from_secs(5);

/// The pool of a store at `url` (`postgres://user:password@host:port/database?...`). No
/// connection is made until one is needed.
pub(crate) fn pool(url: &str) -> Result<Pool, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A connection that broke is noticed by its client (`is_closed`); one left inside a
            // transaction is never given back (see `Tx`'s `Drop`).
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(MAX_CONNECTIONS)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(WAIT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}

/// A connection from `pool`.
pub(crate) async fn connection(pool: &Pool) -> Result<Object, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// A statement and its parameters.
pub(crate) type Statement = (Cow<'static, str>, Vec<Param>);

/// What a statement answered: its rows and how many rows it changed.
pub(crate) struct Answer {
    pub(crate) rows: Vec<Row>,
    pub(crate) changed: u64,
}

/// Where a connection is in its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Each statement commits itself.
    Autocommit,
    /// `BEGIN` not sent yet: it goes with the first statement.
    NotBegun,
    /// Begun; the transaction's id once it has one.
    Begun(Option<i64>),
    /// Ended by its last statement ([`Tx::finish`]): nothing more runs on it.
    Ended,
}

/// A statement that must change (or answer) exactly so many rows, checked by the server: it
/// runs wrapped in a query that fails when the count differs, so that the transaction is
/// aborted there and a COMMIT sent behind it, in the same write, rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// The request's prelude (one row).
    Prelude,
    /// The operation's own ([`crate::Conn::guarded`]).
    Rows(u64),
}

impl Guard {
    fn rows(self) -> u64 {
        match self {
            Self::Prelude => 1,
            Self::Rows(rows) => rows,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Prelude => "ctr-guard:prelude",
            Self::Rows(_) => "ctr-guard:rows",
        }
    }

    /// `statement` wrapped so that the server fails it, naming the guard, unless it answers
    /// exactly the expected rows. (The cast of a column, not of a constant, so the planner
    /// cannot evaluate it ahead of the rows.)
    fn wrap(self, (sql, mut params): Statement) -> Statement {
        let count = params.len() + 1;
        params.push(Param::Int(Some(
            i64::try_from(self.rows()).unwrap_or(i64::MAX),
        )));
        let sql = format!(
            "WITH ctr_guarded AS ({sql}) SELECT CAST(CASE WHEN COUNT(*) = ${count} \
             THEN '0' ELSE '{}' END AS BIGINT) FROM ctr_guarded",
            self.tag()
        );
        (Cow::Owned(sql), params)
    }

    /// Whether `error` is this guard's refusal.
    fn refused(self, error: &StoreError) -> bool {
        let StoreError::Postgres(error) = error else {
            return false;
        };
        error.as_db_error().is_some_and(|db| {
            *db.code() == tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION
                && db.message().contains(self.tag())
        })
    }
}

/// A write waiting to travel with the next statement or the COMMIT.
struct Pending {
    statement: Statement,
    guard: Option<Guard>,
}

/// A pooled connection running one operation: a transaction, or one statement in autocommit.
pub(crate) struct Tx {
    client: Option<Object>,
    /// For asking about a COMMIT whose answer was lost.
    pool: Pool,
    state: State,
    /// Guarded writes wait for the COMMIT and answer at once ([`crate::Conn::guarded`]);
    /// deferred writes wait even before the transaction has an id.
    pipelined: bool,
    deferred: Vec<Pending>,
    /// The prelude's guard failed: the transaction wrote nothing.
    pub(crate) refused: bool,
    /// An operation's guard failed: the transaction wrote nothing.
    pub(crate) unmet: bool,
    /// An answer said the connection may be lost: it is closed, never handed out again.
    broken: bool,
}

impl Tx {
    pub(crate) fn transaction(client: Object, pool: Pool, pipelined: bool) -> Self {
        Self {
            client: Some(client),
            pool,
            state: State::NotBegun,
            pipelined,
            deferred: Vec::new(),
            refused: false,
            unmet: false,
            broken: false,
        }
    }

    pub(crate) fn autocommit(client: Object, pool: Pool) -> Self {
        let mut tx = Self::transaction(client, pool, false);
        tx.state = State::Autocommit;
        tx
    }

    pub(crate) fn pipelined(&self) -> bool {
        self.pipelined
    }

    fn client(&self) -> Result<&ClientWrapper, StoreError> {
        if self.state == State::Ended {
            return Err(StoreError::Ended);
        }
        self.client.as_deref().ok_or(StoreError::Closed)
    }

    /// Whether a deferred statement may wait for the COMMIT: in a pipelined transaction
    /// always; otherwise only once the transaction has an id, so that a COMMIT whose answer is
    /// lost can still be settled.
    pub(crate) fn can_defer(&self) -> bool {
        self.pipelined || matches!(self.state, State::Begun(Some(_)))
    }

    pub(crate) fn defer(&mut self, statement: Statement, guard: Option<Guard>) {
        self.deferred.push(Pending { statement, guard });
    }

    /// Sends what waits (`BEGIN`, deferred statements) now, behind a no-op.
    async fn flush(&mut self) -> Result<(), StoreError> {
        self.run((Cow::Borrowed("SELECT 1"), Vec::new()))
            .await
            .map(drop)
    }

    /// The deferred statements as sent: guarded ones wrapped.
    fn take_deferred(&mut self) -> (Vec<Statement>, Vec<Option<Guard>>) {
        std::mem::take(&mut self.deferred)
            .into_iter()
            .map(|p| match p.guard {
                Some(guard) => (guard.wrap(p.statement), Some(guard)),
                None => (p.statement, None),
            })
            .unzip()
    }

    /// The first failure among the answers to deferred statements, a guard's named as such.
    fn judge(
        &mut self,
        guards: &[Option<Guard>],
        answers: Vec<Result<Answer, StoreError>>,
    ) -> Result<(), StoreError> {
        for (guard, answer) in guards.iter().zip(answers) {
            let Err(error) = answer else { continue };
            return Err(match guard {
                Some(guard) if guard.refused(&error) => {
                    if *guard == Guard::Prelude {
                        self.refused = true;
                        StoreError::PreludeRefused
                    } else {
                        self.unmet = true;
                        StoreError::Unmet
                    }
                }
                _ => error,
            });
        }
        Ok(())
    }

    /// Runs `statement`, pipelined behind what must go before it (`BEGIN`, deferred
    /// statements) and followed by the transaction-id query while there is no id yet.
    pub(crate) async fn run(&mut self, statement: Statement) -> Result<Answer, StoreError> {
        let answer = self.run_pipelined(statement).await;
        self.check(answer)
    }

    /// Notes an error that may have cost the connection (see [`breaks_connection`]).
    fn check<T>(&mut self, answer: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &answer {
            self.broken |= breaks_connection(error);
        }
        answer
    }

    async fn run_pipelined(&mut self, statement: Statement) -> Result<Answer, StoreError> {
        let state = self.state;
        self.client()?;
        let (deferred, guards) = self.take_deferred();
        let client = self.client()?;
        let ask_xid = matches!(state, State::NotBegun | State::Begun(None));
        let xid_query: Statement = (Cow::Borrowed(XID), Vec::new());
        let mut all: Vec<&Statement> = deferred.iter().collect();
        all.push(&statement);
        if ask_xid {
            all.push(&xid_query);
        }
        let mut prepared = prepare(client, &all).await?.into_iter();
        stats::round_trip();
        let begin = (state == State::NotBegun).then(|| client.batch_execute("BEGIN"));
        let before: Vec<_> = deferred
            .iter()
            .zip(prepared.by_ref())
            .map(|(s, p)| send(client, p, &s.1))
            .collect();
        let main = send(
            client,
            prepared.next().ok_or(StoreError::Closed)?,
            &statement.1,
        );
        let xid = prepared.next().map(|p| send(client, p, &[]));
        let (began, before, answer, xid) = futures::join!(
            OptionFuture::from(begin),
            futures::future::join_all(before),
            main,
            OptionFuture::from(xid)
        );
        if state == State::NotBegun && began.as_ref().is_some_and(Result::is_ok) {
            self.state = State::Begun(None);
        }
        began.transpose()?;
        self.judge(&guards, before)?;
        let answer = answer?;
        if let Some(id) = xid.transpose()?.and_then(|xid| first_int(&xid)) {
            self.state = State::Begun(Some(id));
        }
        Ok(answer)
    }

    /// Runs `sql` (statements without parameters) in the transaction (migrations), after
    /// what waits for it (`BEGIN`, deferred statements).
    pub(crate) async fn script(&mut self, sql: &str) -> Result<(), StoreError> {
        if self.state == State::NotBegun || !self.deferred.is_empty() {
            self.flush().await?;
        }
        stats::round_trip();
        let ran = self.client()?.batch_execute(sql).await;
        self.check(ran.map_err(StoreError::from))
    }

    /// Commits (see [`Self::finish`]). A transaction that sent nothing has nothing to commit;
    /// one that ended with its last statement has committed already.
    pub(crate) async fn commit(&mut self) -> Result<(), StoreError> {
        match self.state {
            State::Ended | State::Autocommit => Ok(()),
            State::NotBegun if self.deferred.is_empty() => {
                self.state = State::Autocommit;
                Ok(())
            }
            _ => self.finish(None).await.map(drop),
        }
    }

    /// Ends the transaction in one write: `BEGIN` if not sent yet, the transaction-id query
    /// if there is no id yet, the deferred statements, `last` if any, and `COMMIT`. Answers
    /// what `last` answered.
    ///
    /// A guard that fails, or a statement, aborts the transaction on the server, and the
    /// COMMIT behind it rolls back: the caller is told why. When the answers are lost with the
    /// connection, the server is asked what became of the transaction (see [`settle`]); if the
    /// id's own answer was lost too, the outcome is [`StoreError::CommitUnknown`].
    pub(crate) async fn finish(
        &mut self,
        last: Option<Statement>,
    ) -> Result<Option<Answer>, StoreError> {
        let answer = self.finish_pipelined(last).await;
        self.check(answer)
    }

    async fn finish_pipelined(
        &mut self,
        last: Option<Statement>,
    ) -> Result<Option<Answer>, StoreError> {
        let state = self.state;
        if state == State::Autocommit {
            let Some(last) = last else { return Ok(None) };
            return self.run(last).await.map(Some);
        }
        self.client()?;
        let (deferred, guards) = self.take_deferred();
        let client = self.client()?;
        let xid_query: Statement = (Cow::Borrowed(ASSIGN_XID), Vec::new());
        let known_xid = match state {
            State::Begun(Some(xid)) => Some(xid),
            _ => None,
        };
        // A read-only transaction has nothing to settle: no id is asked, none is assigned.
        let ask_xid = known_xid.is_none() && (!deferred.is_empty() || last.is_some());
        let mut all: Vec<&Statement> = Vec::new();
        if ask_xid {
            all.push(&xid_query);
        }
        all.extend(deferred.iter());
        all.extend(last.iter());
        let mut prepared = prepare(client, &all).await?.into_iter();
        stats::round_trip();
        stats::commit();
        let begin = (state == State::NotBegun).then(|| client.batch_execute("BEGIN"));
        let xid = if ask_xid {
            Some(send(
                client,
                prepared.next().ok_or(StoreError::Closed)?,
                &[],
            ))
        } else {
            None
        };
        let before: Vec<_> = deferred
            .iter()
            .zip(prepared.by_ref())
            .map(|(s, p)| send(client, p, &s.1))
            .collect();
        let main = match &last {
            Some(last) => Some(send(
                client,
                prepared.next().ok_or(StoreError::Closed)?,
                &last.1,
            )),
            None => None,
        };
        let (began, xid, before, answer, committed) = futures::join!(
            OptionFuture::from(begin),
            OptionFuture::from(xid),
            futures::future::join_all(before),
            OptionFuture::from(main),
            client.batch_execute("COMMIT")
        );
        // Whatever is answered now, the transaction is over on the server, or the connection is.
        self.state = State::Ended;
        let xid = known_xid.or_else(|| {
            xid.as_ref()
                .and_then(|x| x.as_ref().ok())
                .and_then(first_int)
        });
        // The server's verdicts come in the order sent; the first failure decides. One that
        // failed made the COMMIT a ROLLBACK.
        let verdict = (|| {
            began.transpose()?;
            self.judge(&guards, before)?;
            answer.transpose()
        })();
        match (verdict, committed) {
            (Ok(answer), Ok(())) => Ok(answer),
            // The server answered: its word is final.
            (Err(error), _) if !lost(&error) => Err(error),
            (Ok(_), Err(error)) if error.as_db_error().is_some() => Err(error.into()),
            // The connection broke: the answers after the break are lost.
            (verdict, committed) => {
                let error = match committed {
                    Err(error) => StoreError::from(error),
                    Ok(()) => verdict.as_ref().err().map_or(StoreError::Closed, |e| {
                        StoreError::Unavailable(e.to_string())
                    }),
                };
                let Some(xid) = xid else {
                    return Err(StoreError::CommitUnknown(format!(
                        "{error}; the transaction's id was lost with it"
                    )));
                };
                settle(&self.pool, xid, error).await?;
                // Committed: what `last` answered is known only if its answer arrived.
                match verdict {
                    Ok(answer) => Ok(answer),
                    Err(_) => Err(StoreError::CommitUnknown(format!(
                        "transaction {xid} committed, but its answer was lost"
                    ))),
                }
            }
        }
    }

    /// Rolls back what was sent (nothing when nothing was).
    pub(crate) async fn rollback(&mut self) {
        if matches!(self.state, State::Begun(_))
            && let Ok(client) = self.client()
        {
            stats::round_trip();
            if client.batch_execute("ROLLBACK").await.is_ok() {
                self.state = State::Autocommit;
            }
        }
        if self.state == State::NotBegun {
            self.state = State::Autocommit;
        }
        self.deferred.clear();
    }
}

/// Whether the connection `error` came from may be dead or in an unknown state: its loss, a
/// fatal answer (an administrator's termination, a server shutting down, whose EOF the client
/// may not have read yet when the next operation would take it from the pool), a commit
/// whose outcome had to be asked elsewhere.
fn breaks_connection(error: &StoreError) -> bool {
    match error {
        StoreError::Postgres(error) => error.as_db_error().is_none_or(|db| {
            matches!(
                db.parsed_severity(),
                Some(Severity::Fatal | Severity::Panic)
            )
        }),
        StoreError::Closed | StoreError::Unavailable(_) | StoreError::CommitUnknown(_) => true,
        _ => false,
    }
}

/// Whether `error` is the connection's loss rather than the server's answer.
fn lost(error: &StoreError) -> bool {
    match error {
        StoreError::Postgres(error) => error.as_db_error().is_none(),
        _ => false,
    }
}

fn first_int(answer: &Answer) -> Option<i64> {
    answer.rows.first().and_then(|row| match row.0.first() {
        Some(Value::Int(id)) => Some(*id),
        _ => None,
    })
}

impl Drop for Tx {
    fn drop(&mut self) {
        if (matches!(self.state, State::Begun(_)) || self.broken)
            && let Some(object) = self.client.take()
        {
            // Dropped inside a transaction (a cancelled or panicked operation, a failed
            // ROLLBACK): the connection is closed, never handed to the next operation with the
            // transaction open. The server rolls it back. A broken one is closed too.
            drop(Object::take(object));
        }
    }
}

/// The transaction's id, once it has one.
const XID: &str = "SELECT txid_current_if_assigned()";
/// The transaction's id, assigned now if it has none: asked first in a transaction's one
/// write, so that a lost COMMIT can be settled whenever this answer arrived.
const ASSIGN_XID: &str = "SELECT txid_current()";

/// `statements` prepared on `client`: those it prepared before from its cache, the others
/// together, in one round trip.
async fn prepare(
    client: &ClientWrapper,
    statements: &[&Statement],
) -> Result<Vec<tokio_postgres::Statement>, StoreError> {
    if client.statement_cache.size() > MAX_PREPARED {
        client.statement_cache.clear();
    }
    let known = client.statement_cache.size();
    let prepared = try_join_all(statements.iter().map(|(sql, params)| async move {
        let types: Vec<Type> = params.iter().map(|p| typed(p).1).collect();
        client.prepare_typed_cached(sql, &types).await
    }))
    .await?;
    if client.statement_cache.size() > known {
        stats::round_trip();
    }
    Ok(prepared)
}

/// One prepared statement executed with `params`; its rows decoded as they arrive.
fn send<'a>(
    client: &'a ClientWrapper,
    statement: tokio_postgres::Statement,
    params: &'a [Param],
) -> BoxFuture<'a, Result<Answer, StoreError>> {
    async move {
        let stream = client
            .query_raw(&statement, params.iter().map(|p| typed(p).0))
            .await?;
        futures::pin_mut!(stream);
        let mut rows = Vec::new();
        while let Some(row) = stream.next().await {
            rows.push(row?);
        }
        let changed = stream.rows_affected().unwrap_or(0);
        let rows = rows.iter().map(decode).collect::<Result<_, _>>()?;
        Ok(Answer { rows, changed })
    }
    .boxed()
}

fn typed(param: &Param) -> (&(dyn ToSql + Sync), Type) {
    match param {
        Param::Int(v) => (v, Type::INT8),
        Param::Real(v) => (v, Type::FLOAT8),
        Param::Text(v) => (v, Type::TEXT),
        Param::Blob(v) => (v, Type::BYTEA),
    }
}

/// A row as [`Value`]s; a column of a type store code does not read is an error naming it.
fn decode(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(i64::from(v))),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(i64::from(v))),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(i64::from(v))),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(f64::from(v))),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::VOID => None,
            _ => {
                return Err(StoreError::Decode(format!(
                    "column {i} ({}) has the type {}, which store code does not read; cast it",
                    column.name(),
                    column.type_()
                )));
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// A COMMIT whose answer was lost (the connection broke while it ran): the transaction `xid`
/// is looked up with `txid_status` on another connection, so a transaction that committed is
/// answered as committed and one that did not as failed. Only when the server cannot be asked
/// either is the outcome [`StoreError::CommitUnknown`].
async fn settle(pool: &Pool, xid: i64, error: StoreError) -> Result<(), StoreError> {
    // The server may still be finishing the COMMIT it was sent: ask until it has decided.
    for _ in 0..50 {
        let asked = async {
            let client = connection(pool).await?;
            let row = client.query_one("SELECT txid_status($1)", &[&xid]).await?;
            Ok::<_, StoreError>(row.try_get::<_, Option<String>>(0)?)
        };
        match asked.await {
            Ok(Some(status)) if status == "committed" => {
                tracing::warn!(%error, xid, "the COMMIT's answer was lost; the transaction committed");
                return Ok(());
            }
            Ok(Some(status)) if status == "aborted" => return Err(error),
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(asked) => {
                return Err(StoreError::CommitUnknown(format!(
                    "{error}; its status could not be asked: {asked}"
                )));
            }
        }
    }
    Err(StoreError::CommitUnknown(format!(
        "{error}; transaction {xid} was still in progress"
    )))
}

/// Runs `sql` once on a connection of its own, outside any transaction (tools and tests).
pub(crate) async fn execute_once(url: &str, sql: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let outcome = client.batch_execute(sql).await.map_err(|e| e.to_string());
    drop(client);
    let _ = driver.await;
    outcome
}
