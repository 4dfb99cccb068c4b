//! Decides, when a statement is posted, what the query will answer: from its text ([`crate::sql`]), the
//! session it carried (`X-Trino-Session`) and the transaction it claims (`X-Trino-Transaction-Id`),
//! checked against the transactions this emulator started ([`Transactions`]).
//!
//! Failures follow Trino's error codes: a transaction id this process did not issue (or that already
//! ended) fails with `UNKNOWN_TRANSACTION` (20), `COMMIT`/`ROLLBACK` outside a transaction with
//! `NOT_IN_TRANSACTION` (21), a nested `START TRANSACTION` with `NOT_SUPPORTED` (13), a malformed
//! session statement or hint with `SYNTAX_ERROR` (1), and `emulator_fail` with `GENERIC_INTERNAL_ERROR`.

use std::time::Duration;

use crate::queries::{Plan, QueryError, ResponseHeader};
use crate::session::{Transactions, form_encode};
use crate::sql::{Statement, classify, parse_hints};

pub const SET_SESSION: &str = "x-trino-set-session";
pub const CLEAR_SESSION: &str = "x-trino-clear-session";
pub const SET_CATALOG: &str = "x-trino-set-catalog";
pub const SET_SCHEMA: &str = "x-trino-set-schema";
pub const STARTED_TRANSACTION_ID: &str = "x-trino-started-transaction-id";
pub const CLEAR_TRANSACTION_ID: &str = "x-trino-clear-transaction-id";

/// What the POST carried, as far as planning goes.
#[derive(Clone, Copy, Debug)]
pub struct Submission<'a> {
    pub sql: &'a str,
    /// Decoded `X-Trino-Session` pairs.
    pub session: &'a [(String, String)],
    /// The transaction claimed by `X-Trino-Transaction-Id` (`None` for absent or `NONE`).
    pub transaction: Option<&'a str>,
}

/// The plan plus the pacing the statement's hints ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub plan: Plan,
    pub delay: Duration,
    /// The `queued_polls` hint, overriding the process default.
    pub queued_polls: Option<u32>,
    /// The `spooled` hint.
    pub spooled: Option<bool>,
}

pub fn plan(submission: &Submission<'_>, transactions: &mut Transactions) -> Planned {
    let hints = match parse_hints(submission.sql) {
        Ok(hints) => hints,
        Err(message) => {
            return Planned {
                plan: Plan::Fail(QueryError::user(1, "SYNTAX_ERROR", message)),
                delay: Duration::ZERO,
                queued_polls: None,
                spooled: None,
            };
        }
    };
    let plan = plan_statement(classify(submission.sql), hints.pages, hints.rows, submission, transactions);
    Planned {
        plan,
        delay: Duration::from_millis(hints.delay_ms),
        queued_polls: hints.queued_polls,
        spooled: hints.spooled,
    }
}

fn plan_statement(
    statement: Statement,
    pages: u32,
    rows: u32,
    submission: &Submission<'_>,
    transactions: &mut Transactions,
) -> Plan {
    if let Some(id) = submission.transaction
        && !transactions.is_active(id)
    {
        return Plan::Fail(QueryError::user(
            20,
            "UNKNOWN_TRANSACTION",
            format!(
                "Unknown transaction ID: {id}. Possibly expired? Commands ignored until end of transaction block"
            ),
        ));
    }
    let update = |update_type, headers: Vec<(&'static str, String)>| Plan::Update {
        update_type,
        headers: headers.into_iter().map(|(name, value)| ResponseHeader { name, value }).collect(),
    };
    match statement {
        Statement::Select => Plan::Rows { pages, rows },
        Statement::ShowSession => Plan::Session { rows: submission.session.to_vec() },
        Statement::SetSession { name, value } => {
            update("SET SESSION", vec![(SET_SESSION, format!("{name}={}", form_encode(&value)))])
        }
        Statement::ResetSession { name } => update("RESET SESSION", vec![(CLEAR_SESSION, name)]),
        Statement::Use { catalog, schema } => {
            let mut headers: Vec<_> = catalog.map(|c| (SET_CATALOG, c)).into_iter().collect();
            headers.push((SET_SCHEMA, schema));
            update("USE", headers)
        }
        Statement::StartTransaction => match submission.transaction {
            Some(_) => Plan::Fail(QueryError::user(13, "NOT_SUPPORTED", "Nested transactions not supported")),
            None => update("START TRANSACTION", vec![(STARTED_TRANSACTION_ID, transactions.start())]),
        },
        Statement::Commit | Statement::Rollback => {
            let update_type = if statement == Statement::Commit { "COMMIT" } else { "ROLLBACK" };
            match submission.transaction {
                Some(id) => {
                    transactions.end(id);
                    update(update_type, vec![(CLEAR_TRANSACTION_ID, "true".to_owned())])
                }
                None => Plan::Fail(QueryError::user(21, "NOT_IN_TRANSACTION", "No transaction in progress")),
            }
        }
        Statement::Fail => {
            Plan::Fail(QueryError::internal("emulator_fail: the statement asked the emulator to fail"))
        }
        Statement::Invalid(message) => Plan::Fail(QueryError::user(1, "SYNTAX_ERROR", message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(sql: &str, transaction: Option<&str>, txns: &mut Transactions) -> Plan {
        let session = vec![("a".to_owned(), "x y".to_owned())];
        plan(&Submission { sql, session: &session, transaction }, txns).plan
    }

    fn error_name(plan: &Plan) -> &'static str {
        match plan {
            Plan::Fail(e) => e.name,
            _ => "",
        }
    }

    fn header(name: &'static str, value: &str) -> ResponseHeader {
        ResponseHeader { name, value: value.to_owned() }
    }

    #[test]
    fn plans() {
        let mut txns = Transactions::default();
        let update = |update_type, headers| Plan::Update { update_type, headers };
        for (sql, expected) in [
            ("SELECT 1", Plan::Rows { pages: 1, rows: 1 }),
            ("SELECT 1 /* emulator: pages=4 rows=3 */", Plan::Rows { pages: 4, rows: 3 }),
            ("SHOW SESSION", Plan::Session { rows: vec![("a".to_owned(), "x y".to_owned())] }),
            ("SET SESSION q = 'a b,c'", update("SET SESSION", vec![header(SET_SESSION, "q=a+b%2Cc")])),
            ("RESET SESSION q", update("RESET SESSION", vec![header(CLEAR_SESSION, "q")])),
            ("USE c.s", update("USE", vec![header(SET_CATALOG, "c"), header(SET_SCHEMA, "s")])),
            ("USE s", update("USE", vec![header(SET_SCHEMA, "s")])),
        ] {
            assert_eq!(planned(sql, None, &mut txns), expected, "{sql}");
        }
    }

    #[test]
    fn failures() {
        let mut txns = Transactions::default();
        for (sql, transaction, expected) in [
            ("SELECT 'emulator_fail'", None, "GENERIC_INTERNAL_ERROR"),
            ("SELECT 1 /* emulator: bogus=1 */", None, "SYNTAX_ERROR"),
            ("SET SESSION x", None, "SYNTAX_ERROR"),
            ("SELECT 1", Some("forged"), "UNKNOWN_TRANSACTION"),
            ("COMMIT", Some("forged"), "UNKNOWN_TRANSACTION"),
            ("COMMIT", None, "NOT_IN_TRANSACTION"),
            ("ROLLBACK", None, "NOT_IN_TRANSACTION"),
        ] {
            assert_eq!(error_name(&planned(sql, transaction, &mut txns)), expected, "{sql} {transaction:?}");
        }
    }

    #[test]
    fn transaction_lifecycle() {
        let mut txns = Transactions::default();
        let Plan::Update { headers, .. } = planned("START TRANSACTION", None, &mut txns) else {
            panic!("START TRANSACTION must be an update");
        };
        assert_eq!(headers[0].name, STARTED_TRANSACTION_ID);
        let id = headers[0].value.clone();
        assert_eq!(planned("SELECT 1", Some(&id), &mut txns), Plan::Rows { pages: 1, rows: 1 });
        assert_eq!(error_name(&planned("START TRANSACTION", Some(&id), &mut txns)), "NOT_SUPPORTED");
        let commit = planned("COMMIT", Some(&id), &mut txns);
        assert_eq!(
            commit,
            Plan::Update { update_type: "COMMIT", headers: vec![header(CLEAR_TRANSACTION_ID, "true")] }
        );
        assert_eq!(error_name(&planned("SELECT 1", Some(&id), &mut txns)), "UNKNOWN_TRANSACTION");
    }

    #[test]
    fn hints_set_pacing() {
        let mut txns = Transactions::default();
        let sub = Submission {
            sql: "SELECT 1 /* emulator: delay_ms=30 queued_polls=4 spooled=1 */",
            session: &[],
            transaction: None,
        };
        let planned = plan(&sub, &mut txns);
        assert_eq!(
            (planned.delay, planned.queued_polls, planned.spooled),
            (Duration::from_millis(30), Some(4), Some(true))
        );
    }
}
