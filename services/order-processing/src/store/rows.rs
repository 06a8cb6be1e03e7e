//! Rows to orders and back: the statements every operation shares, and the decoding of what
//! they answer.

use ctr_money::{Currency, Money};
use ctr_relay_api::CallFailure;
use ctr_service_kit::{ApiError, CustomerId, OrderProcessingId};
use ctr_store::{Conn, Query, Row, query, query_as};
use uuid::Uuid;

use crate::orders::{Failure, Order, OrderStatus, TokenOutcome, TokenRecord};

pub(super) fn corrupt(what: &str) -> ApiError {
    ApiError::internal(format!("a stored order's {what} is invalid"))
}

pub(super) fn failure_columns(
    failure: Option<&Failure>,
) -> (Option<&str>, Option<&str>, Option<&str>) {
    let Some(failure) = failure else {
        return (None, None, None);
    };
    match &failure.call {
        CallFailure::Refused {
            problem_type,
            detail,
        } => (
            Some(failure.capability.as_str()),
            Some(problem_type.as_str()),
            Some(detail.as_str()),
        ),
        CallFailure::Unavailable => (Some(failure.capability.as_str()), None, None),
    }
}

/// `count` parameters numbered from `$first`: `$2, $3, $4`.
pub(super) fn numbered(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` tuples of `width` parameters each, numbered from `$1`: `($1, $2), ($3, $4)`.
pub(super) fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| {
            let columns = (1..=width)
                .map(|column| format!("${}", row * width + column))
                .collect::<Vec<_>>();
            format!("({})", columns.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn amount_to_sql(amount: u64) -> i64 {
    // Money is at most 10^12 minor units.
    i64::try_from(amount).unwrap_or(i64::MAX)
}

pub(super) fn money(amount: i64, currency: &str) -> Result<Money, ApiError> {
    let currency = Currency::parse(currency).map_err(|_| corrupt("currency"))?;
    u64::try_from(amount)
        .ok()
        .and_then(|amount| Money::checked(amount, currency))
        .ok_or_else(|| corrupt("amount"))
}

/// The one statement that writes the outcomes of the steps at `positions`; `clear_tokens`
/// also clears every step's token (the saga has ended: recovery needs them no more). None when
/// there is nothing to write.
pub(super) fn write_steps(order: &Order, positions: &[usize], clear_tokens: bool) -> Option<Query> {
    let positions: Vec<(i64, &'static str)> = positions
        .iter()
        .filter_map(|&p| {
            Some((
                i64::try_from(p).ok()?,
                order.tokens.get(p)?.outcome.as_str(),
            ))
        })
        .collect();
    if positions.is_empty() {
        return None;
    }
    let cases: String = (0..positions.len())
        .map(|i| format!(" WHEN ${} THEN ${}", 2 * i + 3, 2 * i + 4))
        .collect();
    let within = (0..positions.len())
        .map(|i| format!("${}", 2 * i + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let mut update = query(format!(
        "UPDATE checkout_steps SET outcome = CASE position{cases} END, \
         token = CASE WHEN $2 = 1 THEN '' ELSE token END \
         WHERE order_id = $1 AND position IN ({within})"
    ))
    .bind(order.id.as_str())
    .bind(clear_tokens);
    for (position, outcome) in positions {
        update = update.bind(position).bind(outcome);
    }
    Some(update)
}

/// The columns of an order row, in the order [`order_from`] reads them.
pub(super) const ORDER_COLUMNS: &str = "customer_id, currency, total_amount, status, created_at, \
     expires_at, compensation_pending, failure_capability, failure_problem, failure_detail, \
     attention_reason, compensation_attempts, compensation_since_ms";
/// How many columns [`ORDER_COLUMNS`] names: what a statement answers after them is at this
/// index and on.
pub(super) const ORDER_WIDTH: usize = 13;

pub(super) type StepRow = (String, String, String, i64, String, String, String);

pub(super) async fn load_steps(
    conn: &mut Conn,
    id: &OrderProcessingId,
) -> Result<Vec<StepRow>, ApiError> {
    Ok(query_as(
        "SELECT iss, jti, capability, settles_amount, settles_currency, outcome, token \
         FROM checkout_steps WHERE order_id = $1 ORDER BY position",
    )
    .bind(id.as_str())
    .fetch_all(conn)
    .await?)
}

/// The order and its steps' tokens (empty once its checkout ended).
pub(super) async fn load(
    conn: &mut Conn,
    id: &OrderProcessingId,
) -> Result<Option<(Order, Vec<String>)>, ApiError> {
    let row = query(format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let steps = load_steps(conn, id).await?;
    let tokens = steps.iter().map(|s| s.6.clone()).collect();
    Ok(Some((order_from(id, &row, steps)?, tokens)))
}

pub(super) fn order_from(
    id: &OrderProcessingId,
    row: &Row,
    steps: Vec<StepRow>,
) -> Result<Order, ApiError> {
    let customer: String = row.get(0)?;
    let currency: String = row.get(1)?;
    let total: i64 = row.get(2)?;
    let status: String = row.get(3)?;
    let failure_capability: Option<String> = row.get(7)?;
    let failure_problem: Option<String> = row.get(8)?;
    let failure_detail: Option<String> = row.get(9)?;
    let tokens = steps
        .into_iter()
        .map(|(iss, jti, capability, amount, currency, outcome, _)| {
            Ok(TokenRecord {
                iss,
                jti: Uuid::try_parse(&jti).map_err(|_| corrupt("jti"))?,
                capability,
                settles: money(amount, &currency)?,
                outcome: TokenOutcome::parse(&outcome).ok_or_else(|| corrupt("outcome"))?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let failure = failure_capability.map(|capability| Failure {
        capability,
        call: match failure_problem {
            Some(problem_type) => CallFailure::Refused {
                problem_type,
                detail: failure_detail.unwrap_or_default(),
            },
            None => CallFailure::Unavailable,
        },
    });
    let compensation_pending: i64 = row.get(6)?;
    Ok(Order {
        id: id.clone(),
        customer_id: CustomerId::parse(&customer).map_err(|_| corrupt("customer"))?,
        total: money(total, &currency)?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        tokens,
        failure,
        compensation_pending: compensation_pending != 0,
        attention: row.get(10)?,
        compensation_attempts: row.get(11)?,
        compensation_since_ms: row.get(12)?,
    })
}
