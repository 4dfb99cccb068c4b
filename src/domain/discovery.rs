//! What coordinators' answers to `GET /v1/query/{id}` say about who holds a query (rows Q1–Q4 of
//! docs/trino-conformance.md), one answer at a time and all of them together. Pure: the lookup
//! ([`crate::coordinators::query_lookup`]) asks, this module judges.
//!
//! Trino's `QueryResource.getQueryInfo` answers **200** for a query it holds, **403** for one it holds
//! that the asking user may not view, and **410** for *every* id it does not hold — never seen,
//! forgotten, another coordinator's — so a 410 is "not here", never ownership. 404 comes only from ids
//! Jersey cannot convert (not here either). Anything else — no answer in time, a refused connection, a
//! 5xx, a 401 — says nothing: the query may be there. So only "every cluster says not here" makes a
//! query unknown; a cluster that could not say makes the answer *unknown*, which a client should retry.

/// What one coordinator's answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It holds the query (200, or 403: held, but not viewable by the asker).
    Holds,
    /// It does not hold the query (410; 404 for an id it cannot read).
    NotHere,
    /// It did not say: no answer, a failed connection, or another status.
    Silent,
}

/// Judges one answer: `status` is the HTTP status, `None` when no answer came (timeout, connection
/// refused or reset, TLS failure).
pub fn judge(status: Option<u16>) -> Answer {
    match status {
        Some(200 | 403) => Answer::Holds,
        Some(404 | 410) => Answer::NotHere,
        _ => Answer::Silent,
    }
}

/// What the answers of every cluster together say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<C> {
    /// This cluster holds the query (the first that said so).
    Owner(C),
    /// Every cluster answered that it does not hold it: no one does.
    NowhereHeld,
    /// No cluster holds it as far as the answers go, but at least one did not say: retry later.
    Unknown,
}

/// Collects answers as they arrive; a holder settles the verdict at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally<C> {
    owner: Option<C>,
    silent: usize,
}

impl<C> Default for Tally<C> {
    fn default() -> Self {
        Tally { owner: None, silent: 0 }
    }
}

impl<C: Clone> Tally<C> {
    /// Records `answer` from `cluster`; returns the owner once one is known (no need to wait for more).
    pub fn add(&mut self, cluster: C, answer: Answer) -> Option<C> {
        match answer {
            Answer::Holds if self.owner.is_none() => self.owner = Some(cluster),
            Answer::Holds | Answer::NotHere => {}
            Answer::Silent => self.silent += 1,
        }
        self.owner.clone()
    }

    /// The verdict over the answers recorded; clusters that were never asked (or whose answers never
    /// came) must have been recorded as [`Answer::Silent`].
    pub fn verdict(&self) -> Verdict<C> {
        match (&self.owner, self.silent) {
            (Some(owner), _) => Verdict::Owner(owner.clone()),
            (None, 0) => Verdict::NowhereHeld,
            (None, _) => Verdict::Unknown,
        }
    }
}

/// The verdict over a whole set of answers, in arrival order.
pub fn verdict<C: Clone>(answers: impl IntoIterator<Item = (C, Answer)>) -> Verdict<C> {
    let mut tally = Tally::default();
    for (cluster, answer) in answers {
        if tally.add(cluster, answer).is_some() {
            break;
        }
    }
    tally.verdict()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Answer::*;

    #[test]
    fn one_answer() {
        #[rustfmt::skip]
        let cases: &[(Option<u16>, Answer)] = &[
            (Some(200), Holds),     // Q1
            (Some(403), Holds),     // Q4: held, the asker may not view it
            (Some(410), NotHere),   // Q2: every id it does not hold, never seen ones included
            (Some(404), NotHere),   // Q3: an id Jersey cannot convert
            (Some(401), Silent),    // Q7: no user: says nothing about the query
            (Some(406), Silent),    // F1: a forwarded header refused
            (Some(500), Silent),
            (Some(502), Silent),
            (Some(503), Silent),
            (Some(504), Silent),
            (Some(302), Silent),
            (None, Silent),         // timed out, refused, reset
        ];
        for (status, expected) in cases {
            assert_eq!(judge(*status), *expected, "{status:?}");
        }
    }

    #[test]
    fn every_answer() {
        #[rustfmt::skip]
        type Answers = &'static [(char, Answer)];
        #[rustfmt::skip]
        let cases: &[(Answers, Verdict<char>)] = &[
            (&[('a', NotHere), ('b', Holds), ('c', NotHere)], Verdict::Owner('b')),
            (&[('a', Holds), ('b', Holds)], Verdict::Owner('a')),                 // the first holder
            (&[('a', Silent), ('b', Holds)], Verdict::Owner('b')),                // a silent cluster does not matter then
            (&[('a', NotHere), ('b', NotHere), ('c', NotHere)], Verdict::NowhereHeld),
            (&[('a', NotHere), ('b', Silent), ('c', NotHere)], Verdict::Unknown), // b may hold it
            (&[('a', Silent)], Verdict::Unknown),
            (&[], Verdict::NowhereHeld),                                          // no cluster configured
        ];
        for (answers, expected) in cases {
            assert_eq!(verdict(answers.iter().copied()), *expected, "{answers:?}");
        }
    }
}
