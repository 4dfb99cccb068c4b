//! The per-query state machine: queued → executing → finished (or failed, or canceled), with Trino's
//! token and slug rules. Pure: time comes in as an argument, nothing here locks, sleeps or does I/O.
//!
//! Token rules (from Trino's `QueuedStatementResource` and `Query`):
//! - The POST answer is queued token 0 and points at `queued/{id}/{slug}/1`.
//! - A queued GET accepts the last token or last+1, else 410 Gone. The query is dispatched by its
//!   `queued_polls`-th queued GET (0 acts as 1: Trino always answers the POST with a queued URI), whose
//!   answer points at `executing/{id}/{slug}/0`.
//! - An executing GET of the last token returns the same page again (safe retry); an older token is
//!   410 Gone; any token other than last+1, or one past the final page, is 404 (as in Trino).
//! - Every slug is checked for its context and token ([`crate::slug`]); a wrong one is 404, as is any
//!   executing URI of a query not yet dispatched.
//!
//! Pacing: the first executing page and each data page become ready `delay` after the previous page
//! (or dispatch); a GET arriving earlier waits up to its `maxWait` (≤ 1 s), then gets an empty RUNNING
//! page pointing at the next token, as Trino answers when no data is ready.
//!
//! Cancel (DELETE on a statement URI or on `/v1/query/{id}`) of an unfinished query: the next GET of a
//! valid token (queued, or the next executing one) answers a FAILED page with error `USER_CANCELED`,
//! as Trino does; cancelling a finished query changes nothing.

use std::time::{Duration, Instant};

use crate::slug::{Slug, SlugContext};

/// Trino's `QueryError` essentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError {
    pub code: i32,
    pub name: &'static str,
    pub error_type: &'static str,
    pub message: String,
}

impl QueryError {
    pub fn user(code: i32, name: &'static str, message: impl Into<String>) -> Self {
        Self { code, name, error_type: "USER_ERROR", message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: 65536,
            name: "GENERIC_INTERNAL_ERROR",
            error_type: "INTERNAL_ERROR",
            message: message.into(),
        }
    }

    pub fn user_canceled() -> Self {
        Self::user(3, "USER_CANCELED", "Query was canceled")
    }
}

/// A response header the final page carries (`X-Trino-Set-Session` and friends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    pub name: &'static str,
    pub value: String,
}

/// What a query will answer once it executes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// `pages` data pages of `rows` rows `(cluster, page, row)`, then an empty final page.
    Rows { pages: u32, rows: u32 },
    /// One data page of `(name, value)` rows (`SHOW SESSION`), then an empty final page.
    Session { rows: Vec<(String, String)> },
    /// A final page with `updateType`, the result `[[true]]` and response headers.
    Update { update_type: &'static str, headers: Vec<ResponseHeader> },
    /// A final FAILED page.
    Fail(QueryError),
}

impl Plan {
    fn data_pages(&self) -> u32 {
        match self {
            Plan::Rows { pages, .. } => *pages,
            Plan::Session { .. } => 1,
            Plan::Update { .. } | Plan::Fail(_) => 0,
        }
    }

    fn rows_per_page(&self) -> u64 {
        match self {
            Plan::Rows { rows, .. } => u64::from(*rows),
            Plan::Session { rows } => rows.len() as u64,
            Plan::Update { .. } | Plan::Fail(_) => 0,
        }
    }
}

/// Trino's query states, as far as the emulator goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Queued,
    Running,
    Finished,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "QUEUED",
            State::Running => "RUNNING",
            State::Finished => "FINISHED",
            State::Failed => "FAILED",
        }
    }
}

/// One answer of the statement protocol, before rendering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    /// QUEUED, next: `queued/{next}`.
    Queued { next: u64 },
    /// QUEUED (just dispatched), next: `executing/0`.
    Dispatched,
    /// RUNNING without data (nothing ready within `maxWait`), next: `executing/{next}`.
    Running { next: u64 },
    /// RUNNING with data page `index` (0-based), next: `executing/{next}`.
    Data { index: u32, next: u64 },
    /// FINISHED; no next.
    Finished,
    /// FAILED; no next.
    Failed(QueryError),
}

impl Page {
    pub fn state(&self) -> State {
        match self {
            Page::Queued { .. } | Page::Dispatched => State::Queued,
            Page::Running { .. } | Page::Data { .. } => State::Running,
            Page::Finished => State::Finished,
            Page::Failed(_) => State::Failed,
        }
    }

    fn is_final(&self) -> bool {
        matches!(self, Page::Finished | Page::Failed(_))
    }
}

/// Why a request is refused (Trino answers each differently: docs/trino-conformance.md S3–S6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// 404 `Query not found`: unknown query, wrong slug, or an executing URI of a query not yet dispatched.
    NotFound,
    /// 410: a queued token other than the last or the next one (`GoneException("Invalid token")`).
    QueuedGone,
    /// 410 without a body: an executing token older than the last one served.
    Gone,
    /// 404 without a body: an executing token that is neither the last nor the next one, or one past
    /// the final page.
    UnknownToken,
}

/// What an executing GET gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Page(Page),
    /// Nothing ready yet: ask again at this instant.
    Wait(Instant),
}

/// Numbers for `stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub elapsed: Duration,
    pub queued_time: Duration,
    pub processed_rows: u64,
    pub total_splits: u32,
    pub completed_splits: u32,
}

#[derive(Debug)]
struct Execution {
    /// The last token served and its page (repeated on retry).
    last: Option<(u64, Page)>,
    data_served: u32,
    ready_at: Instant,
    final_sent: bool,
}

#[derive(Debug)]
pub struct Query {
    plan: Plan,
    slug: Slug,
    queued_polls: u32,
    delay: Duration,
    queued_token: u64,
    execution: Option<Execution>,
    canceled: bool,
    outcome: Option<State>,
    created: Instant,
    dispatched: Option<Instant>,
    ended: Option<Instant>,
    last_access: Instant,
}

impl Query {
    pub fn new(plan: Plan, slug: Slug, queued_polls: u32, delay: Duration, now: Instant) -> Self {
        Self {
            plan,
            slug,
            queued_polls: queued_polls.max(1),
            delay,
            queued_token: 0,
            execution: None,
            canceled: false,
            outcome: None,
            created: now,
            dispatched: None,
            ended: None,
            last_access: now,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The slug of a URI of `context` carrying `token`.
    pub fn slug(&self, context: SlugContext, token: u64) -> String {
        self.slug.make(context, token)
    }

    /// The answer to the POST that created the query (queued token 0).
    pub fn first_page() -> Page {
        Page::Queued { next: 1 }
    }

    pub fn state(&self) -> State {
        self.outcome.unwrap_or(if self.execution.is_some() { State::Running } else { State::Queued })
    }

    /// Finished, failed or canceled.
    pub fn is_done(&self) -> bool {
        self.outcome.is_some()
    }

    pub fn is_canceled(&self) -> bool {
        self.canceled
    }

    /// The error name of a failed query (`USER_CANCELED` for a canceled one).
    pub fn error_name(&self) -> Option<&'static str> {
        match (&self.plan, self.canceled, self.outcome) {
            (_, true, _) => Some(QueryError::user_canceled().name),
            (Plan::Fail(error), false, Some(State::Failed)) => Some(error.name),
            _ => None,
        }
    }

    pub fn last_access(&self) -> Instant {
        self.last_access
    }

    pub fn progress(&self, now: Instant) -> Progress {
        let data_served = self.execution.as_ref().map_or(0, |e| e.data_served);
        Progress {
            elapsed: self.ended.unwrap_or(now).saturating_duration_since(self.created),
            queued_time: self.dispatched.unwrap_or(now).saturating_duration_since(self.created),
            processed_rows: u64::from(data_served) * self.plan.rows_per_page(),
            total_splits: self.plan.data_pages(),
            completed_splits: data_served,
        }
    }

    /// A GET of `queued/{id}/{slug}/{token}`.
    pub fn queued(&mut self, slug: &str, token: u64, now: Instant) -> Result<Page, Reject> {
        if !self.slug.is_valid(SlugContext::Queued, slug, token) {
            return Err(Reject::NotFound);
        }
        if token != self.queued_token && token != self.queued_token + 1 {
            return Err(Reject::QueuedGone);
        }
        self.queued_token = token;
        self.last_access = now;
        if self.canceled {
            return Ok(Page::Failed(QueryError::user_canceled()));
        }
        if token < u64::from(self.queued_polls) {
            return Ok(Page::Queued { next: token + 1 });
        }
        if self.execution.is_none() {
            self.execution =
                Some(Execution { last: None, data_served: 0, ready_at: now + self.delay, final_sent: false });
            self.dispatched = Some(now);
        }
        Ok(Page::Dispatched)
    }

    /// A GET of `executing/{id}/{slug}/{token}` at `now`, willing to wait until `wait_until`.
    pub fn executing(
        &mut self,
        slug: &str,
        token: u64,
        now: Instant,
        wait_until: Instant,
    ) -> Result<Step, Reject> {
        if !self.slug.is_valid(SlugContext::Executing, slug, token) {
            return Err(Reject::NotFound);
        }
        let Some(exec) = self.execution.as_mut() else {
            return Err(Reject::NotFound);
        };
        self.last_access = now;
        match &exec.last {
            Some((last, page)) if token == *last => return Ok(Step::Page(page.clone())),
            Some((last, _)) if token < *last => return Err(Reject::Gone),
            Some((last, _)) if exec.final_sent || token != last + 1 => return Err(Reject::UnknownToken),
            None if token != 0 => return Err(Reject::UnknownToken),
            _ => {}
        }
        let data_pages = self.plan.data_pages();
        let page = if self.canceled {
            Page::Failed(QueryError::user_canceled())
        } else if now < exec.ready_at {
            if now < wait_until {
                return Ok(Step::Wait(exec.ready_at.min(wait_until)));
            }
            Page::Running { next: token + 1 }
        } else if exec.data_served < data_pages {
            let index = exec.data_served;
            exec.data_served += 1;
            exec.ready_at = if exec.data_served < data_pages { now + self.delay } else { now };
            Page::Data { index, next: token + 1 }
        } else if let Plan::Fail(error) = &self.plan {
            Page::Failed(error.clone())
        } else {
            Page::Finished
        };
        if page.is_final() {
            exec.final_sent = true;
            self.ended.get_or_insert(now);
            self.outcome.get_or_insert(page.state());
        }
        exec.last = Some((token, page.clone()));
        Ok(Step::Page(page))
    }

    /// Checks a URI for HEAD, DELETE or partial cancel: the slug must be valid for its context and token
    /// (an executing URI also needs a dispatched query). The token itself is not checked (as in Trino).
    pub fn check(&self, context: SlugContext, slug: &str, token: u64) -> Result<(), Reject> {
        let exists = context == SlugContext::Queued || self.execution.is_some();
        if exists && self.slug.is_valid(context, slug, token) { Ok(()) } else { Err(Reject::NotFound) }
    }

    /// Records a request that touched the query without changing it (HEAD, info).
    pub fn touch(&mut self, now: Instant) {
        self.last_access = now;
    }

    /// Cancels an unfinished query; false (and no change) when it already finished, failed or was canceled.
    pub fn cancel(&mut self, now: Instant) -> bool {
        self.last_access = now;
        if self.outcome.is_some() {
            return false;
        }
        self.canceled = true;
        self.outcome = Some(State::Failed);
        self.ended = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Reject::*;
    use super::SlugContext::{Executing as E, Queued as Q};
    use super::*;

    /// One request against the machine, at `ms` milliseconds after creation.
    #[derive(Clone, Copy, Debug)]
    enum Op {
        /// GET queued/{token} with the right slug.
        Get(SlugContext, u64),
        /// GET with a slug made for another token.
        BadSlug(SlugContext, u64),
        /// GET executing/{token} with the queued slug of that token.
        QueuedSlug(u64),
        /// GET executing/{token} at `ms`, waiting until `wait_ms`.
        At(u64, u64, u64),
        Cancel,
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Out {
        P(Page),
        R(Reject),
        W(u64),
        Canceled(bool),
    }
    use Out::*;

    fn query(plan: Plan, queued_polls: u32, delay_ms: u64, t0: Instant) -> Query {
        Query::new(plan, Slug::with_key(9), queued_polls, Duration::from_millis(delay_ms), t0)
    }

    fn run(mut q: Query, t0: Instant, ops: &[(Op, Out)]) -> Query {
        let ms = |m: u64| t0 + Duration::from_millis(m);
        for (i, (op, expected)) in ops.iter().enumerate() {
            let got = match *op {
                Op::Get(Q, t) => q.queued(&q.slug(Q, t), t, t0).map_or_else(R, P),
                Op::BadSlug(Q, t) => q.queued(&q.slug(Q, t + 1), t, t0).map_or_else(R, P),
                Op::Get(E, t) => exec(&mut q, E, t, t, ms(0), ms(0), t0),
                Op::BadSlug(E, t) => exec(&mut q, E, t + 1, t, ms(0), ms(0), t0),
                Op::QueuedSlug(t) => exec(&mut q, Q, t, t, ms(0), ms(0), t0),
                Op::At(t, now, wait) => exec(&mut q, E, t, t, ms(now), ms(wait), t0),
                Op::Cancel => Canceled(q.cancel(t0)),
            };
            assert_eq!(&got, expected, "step {i}: {op:?}");
        }
        q
    }

    fn exec(
        q: &mut Query,
        ctx: SlugContext,
        slug_token: u64,
        t: u64,
        now: Instant,
        wait: Instant,
        t0: Instant,
    ) -> Out {
        let slug = q.slug(ctx, slug_token);
        match q.executing(&slug, t, now, wait) {
            Ok(Step::Page(p)) => P(p),
            Ok(Step::Wait(at)) => W(u64::try_from(at.duration_since(t0).as_millis()).unwrap()),
            Err(r) => R(r),
        }
    }

    fn rows(pages: u32) -> Plan {
        Plan::Rows { pages, rows: 2 }
    }

    fn data(index: u32, next: u64) -> Out {
        P(Page::Data { index, next })
    }

    fn canceled() -> Out {
        P(Page::Failed(QueryError::user_canceled()))
    }

    // conformance: S3, S4
    #[test]
    fn queued_token_rules() {
        let t0 = Instant::now();
        let q = query(rows(1), 3, 0, t0);
        run(
            q,
            t0,
            &[
                (Op::Get(Q, 2), R(QueuedGone)),
                (Op::BadSlug(Q, 1), R(NotFound)),
                (Op::Get(E, 0), R(NotFound)),
                (Op::Get(Q, 0), P(Page::Queued { next: 1 })),
                (Op::Get(Q, 1), P(Page::Queued { next: 2 })),
                (Op::Get(Q, 1), P(Page::Queued { next: 2 })),
                (Op::Get(Q, 0), R(QueuedGone)),
                (Op::Get(Q, 3), R(QueuedGone)),
                (Op::Get(Q, 2), P(Page::Queued { next: 3 })),
                (Op::Get(Q, 3), P(Page::Dispatched)),
                (Op::Get(Q, 3), P(Page::Dispatched)),
                (Op::Get(E, 0), data(0, 1)),
            ],
        );
    }

    #[test]
    fn zero_queued_polls_acts_as_one() {
        let t0 = Instant::now();
        run(query(rows(1), 0, 0, t0), t0, &[(Op::Get(Q, 1), P(Page::Dispatched))]);
    }

    // conformance: S5, S6
    #[test]
    fn executing_token_rules() {
        let t0 = Instant::now();
        let q = run(
            query(rows(2), 1, 0, t0),
            t0,
            &[
                (Op::Get(Q, 1), P(Page::Dispatched)),
                (Op::Get(E, 1), R(UnknownToken)),
                (Op::BadSlug(E, 0), R(NotFound)),
                (Op::QueuedSlug(0), R(NotFound)),
                (Op::Get(E, 0), data(0, 1)),
                (Op::Get(E, 0), data(0, 1)),
                (Op::Get(E, 2), R(UnknownToken)),
                (Op::Get(E, 1), data(1, 2)),
                (Op::Get(E, 0), R(Gone)),
                (Op::Get(E, 2), P(Page::Finished)),
                (Op::Get(E, 2), P(Page::Finished)),
                (Op::Get(E, 3), R(UnknownToken)),
                (Op::Get(E, 1), R(Gone)),
                (Op::Cancel, Canceled(false)),
            ],
        );
        assert_eq!(q.state(), State::Finished);
        assert_eq!(q.progress(t0).processed_rows, 4);
    }

    #[test]
    fn cancel_while_executing() {
        let t0 = Instant::now();
        let q = run(
            query(rows(3), 1, 0, t0),
            t0,
            &[
                (Op::Get(Q, 1), P(Page::Dispatched)),
                (Op::Get(E, 0), data(0, 1)),
                (Op::Cancel, Canceled(true)),
                (Op::Cancel, Canceled(false)),
                (Op::Get(E, 0), data(0, 1)),
                (Op::Get(E, 1), canceled()),
                (Op::Get(E, 1), canceled()),
                (Op::Get(E, 2), R(UnknownToken)),
                (Op::Get(Q, 1), canceled()),
            ],
        );
        assert_eq!(
            (q.state(), q.is_canceled(), q.error_name()),
            (State::Failed, true, Some("USER_CANCELED"))
        );
    }

    #[test]
    fn cancel_while_queued() {
        let t0 = Instant::now();
        let q = run(
            query(rows(1), 2, 0, t0),
            t0,
            &[
                (Op::Get(Q, 1), P(Page::Queued { next: 2 })),
                (Op::Cancel, Canceled(true)),
                (Op::Get(Q, 2), canceled()),
                (Op::Get(Q, 3), canceled()),
                (Op::Get(E, 0), R(NotFound)),
            ],
        );
        assert_eq!(q.state(), State::Failed);
    }

    #[test]
    fn delayed_pages_wait_then_answer_running() {
        let t0 = Instant::now();
        run(
            query(rows(2), 1, 100, t0),
            t0,
            &[
                (Op::Get(Q, 1), P(Page::Dispatched)),
                (Op::At(0, 10, 1000), W(100)),
                (Op::At(0, 10, 50), W(50)),
                (Op::At(0, 50, 50), P(Page::Running { next: 1 })),
                (Op::At(0, 60, 60), P(Page::Running { next: 1 })),
                (Op::At(1, 100, 1000), data(0, 2)),
                (Op::At(2, 150, 1000), W(200)),
                (Op::At(2, 200, 1000), data(1, 3)),
                (Op::At(3, 200, 1000), P(Page::Finished)),
            ],
        );
    }

    #[test]
    fn plans_without_data() {
        let t0 = Instant::now();
        let fail = QueryError::internal("boom");
        for (plan, last) in [
            (Plan::Fail(fail.clone()), P(Page::Failed(fail.clone()))),
            (Plan::Update { update_type: "SET SESSION", headers: vec![] }, P(Page::Finished)),
            (rows(0), P(Page::Finished)),
        ] {
            let q = run(
                query(plan, 1, 0, t0),
                t0,
                &[(Op::Get(Q, 1), P(Page::Dispatched)), (Op::Get(E, 0), last)],
            );
            assert_ne!(q.state(), State::Running);
        }
    }

    #[test]
    fn show_session_is_one_data_page() {
        let t0 = Instant::now();
        let plan = Plan::Session { rows: vec![("a".into(), "1".into())] };
        let q = run(
            query(plan, 1, 0, t0),
            t0,
            &[
                (Op::Get(Q, 1), P(Page::Dispatched)),
                (Op::Get(E, 0), data(0, 1)),
                (Op::Get(E, 1), P(Page::Finished)),
            ],
        );
        assert_eq!(q.progress(t0).processed_rows, 1);
    }

    #[test]
    fn head_and_delete_checks() {
        let t0 = Instant::now();
        let mut q = query(rows(1), 1, 0, t0);
        for (ctx, slug_token, token, ok) in [(Q, 1, 1, true), (Q, 2, 1, false), (E, 0, 0, false)] {
            assert_eq!(q.check(ctx, &q.slug(ctx, slug_token), token).is_ok(), ok, "{ctx:?} {token}");
        }
        q.queued(&q.slug(Q, 1), 1, t0).unwrap();
        for (ctx, slug_token, token, ok) in
            [(E, 0, 0, true), (E, 5, 5, true), (E, 0, 1, false), (Q, 0, 0, true)]
        {
            assert_eq!(q.check(ctx, &q.slug(ctx, slug_token), token).is_ok(), ok, "{ctx:?} {token}");
        }
    }
}
