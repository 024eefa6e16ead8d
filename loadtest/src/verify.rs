//! The ordering and completeness check: every customer message carries `seq=N`; at the end
//! each session's history must hold every acknowledged message exactly once, in the order
//! sent.

use std::collections::HashMap;

use futures::StreamExt;
use serde::Serialize;

use crate::client::Chat;

/// What a customer sent in one session. A sequence number is either acknowledged (the
/// server answered that the turn is committed) or not (an error or timeout: the turn may
/// or may not have been applied, so it may appear once, but it is not lost if it doesn't).
#[derive(Debug, Clone, Default)]
pub struct SessionRecord {
    pub id: String,
    pub acked: Vec<u32>,
    pub unacked: Vec<u32>,
}

/// The customer's message for turn `seq`. The question varies so the backend does real
/// retrieval work; none of them contains a keyword that changes the workflow state.
pub fn message_text(seq: u32) -> String {
    const QUESTIONS: [&str; 4] = [
        "What are your opening hours?",
        "How much does the premium plan cost?",
        "Can I pay by card?",
        "Where do I find my invoice?",
    ];
    format!("seq={seq} {}", QUESTIONS[seq as usize % QUESTIONS.len()])
}

pub fn parse_seq(text: &str) -> Option<u32> {
    let rest = text.strip_prefix("seq=")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    pub sessions_checked: u64,
    /// Sessions whose history could not be read: nothing about them is known.
    pub unreadable: u64,
    /// Acknowledged messages missing from the history.
    pub lost: u64,
    /// Extra copies of a message.
    pub duplicated: u64,
    /// The fewest messages that would have to move to put the history in sending order.
    pub reordered: u64,
    /// Customer messages in the history that this run never sent.
    pub unexpected: u64,
}

impl Findings {
    pub fn clean(&self) -> bool {
        self.unreadable + self.lost + self.duplicated + self.reordered + self.unexpected == 0
    }

    fn add(&mut self, o: Findings) {
        self.sessions_checked += o.sessions_checked;
        self.unreadable += o.unreadable;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.unexpected += o.unexpected;
    }
}

/// Checks one session: `history` is its log as (role, text), in log order.
pub fn check<'a>(
    record: &SessionRecord,
    history: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Findings {
    let mut f = Findings {
        sessions_checked: 1,
        ..Findings::default()
    };
    let sent = |s: &u32| record.acked.contains(s) || record.unacked.contains(s);
    let mut seen: HashMap<u32, u64> = HashMap::new();
    let mut first_seen_order = Vec::new();
    for (_, text) in history.into_iter().filter(|(role, _)| *role == "HUMAN") {
        match parse_seq(text).filter(sent) {
            None => f.unexpected += 1,
            Some(seq) => {
                let n = seen.entry(seq).or_default();
                *n += 1;
                if *n == 1 {
                    first_seen_order.push(seq);
                } else {
                    f.duplicated += 1;
                }
            }
        }
    }
    f.lost = record
        .acked
        .iter()
        .filter(|s| !seen.contains_key(s))
        .count() as u64;
    f.reordered = (first_seen_order.len() - longest_increasing_run(&first_seen_order)) as u64;
    f
}

/// Length of the longest strictly increasing subsequence (patience sorting).
fn longest_increasing_run(xs: &[u32]) -> usize {
    let mut tails: Vec<u32> = Vec::new();
    for &x in xs {
        let i = tails.partition_point(|&t| t < x);
        if i == tails.len() {
            tails.push(x);
        } else {
            tails[i] = x;
        }
    }
    tails.len()
}

/// Reads every session's history (spread over the targets, `concurrency` at a time) and
/// checks it; `on_done` is called once per session for progress.
pub async fn verify_all(
    chat: &Chat,
    sessions: &[SessionRecord],
    concurrency: usize,
    on_done: impl Fn(),
) -> Findings {
    let mut checks = futures::stream::iter(sessions.iter().enumerate())
        .map(|(i, record)| async move {
            match chat.messages(chat.target_for(i), &record.id).await {
                Ok(log) => check(record, log.iter().map(|(r, t)| (r.as_str(), t.as_str()))),
                Err(_) => Findings {
                    sessions_checked: 1,
                    unreadable: 1,
                    ..Findings::default()
                },
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut total = Findings::default();
    while let Some(f) = checks.next().await {
        total.add(f);
        on_done();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(acked: &[u32], unacked: &[u32]) -> SessionRecord {
        SessionRecord {
            id: "s".into(),
            acked: acked.to_vec(),
            unacked: unacked.to_vec(),
        }
    }

    /// A history with the greeting first and an answer after every customer message.
    fn history(seqs: &[u32]) -> Vec<(String, String)> {
        let mut h = vec![("AI".to_string(), "Hi there!".to_string())];
        for &s in seqs {
            h.push(("HUMAN".into(), message_text(s)));
            h.push(("AI".into(), format!("answer with seq={s} in it")));
        }
        h
    }

    fn run(r: &SessionRecord, seqs: &[u32]) -> Findings {
        let h = history(seqs);
        check(r, h.iter().map(|(a, b)| (a.as_str(), b.as_str())))
    }

    #[test]
    fn message_text_round_trips() {
        for s in [0, 1, 7, 12345] {
            assert_eq!(parse_seq(&message_text(s)), Some(s));
        }
        assert_eq!(parse_seq("hello seq=3"), None);
        assert_eq!(parse_seq("seq=x"), None);
    }

    #[test]
    fn a_complete_ordered_history_is_clean() {
        let f = run(&record(&[1, 2, 3], &[]), &[1, 2, 3]);
        assert!(f.clean(), "{f:?}");
        assert_eq!(f.sessions_checked, 1);
    }

    #[test]
    fn counts_lost_acknowledged_turns_only() {
        let f = run(&record(&[1, 2, 3, 4], &[5]), &[1, 3]);
        assert_eq!((f.lost, f.duplicated, f.reordered), (2, 0, 0));
        // An unacknowledged turn may be applied or not.
        let f = run(&record(&[1], &[2, 3]), &[1, 2]);
        assert!(f.clean(), "{f:?}");
    }

    #[test]
    fn counts_every_extra_copy() {
        let f = run(&record(&[1, 2, 3], &[]), &[1, 2, 2, 3, 2]);
        assert_eq!((f.lost, f.duplicated, f.reordered), (0, 2, 0));
        let f = run(&record(&[1], &[2]), &[1, 2, 2]);
        assert_eq!(f.duplicated, 1);
    }

    #[test]
    fn counts_the_fewest_moves_to_restore_order() {
        let r = record(&[1, 2, 3, 4], &[]);
        assert_eq!(run(&r, &[1, 3, 2, 4]).reordered, 1);
        assert_eq!(run(&r, &[4, 1, 2, 3]).reordered, 1);
        assert_eq!(run(&r, &[4, 3, 2, 1]).reordered, 3);
        assert_eq!(run(&r, &[2, 1, 4, 3]).reordered, 2);
        // A duplicate that comes late is a duplicate, not a reordering.
        let f = run(&r, &[1, 2, 3, 4, 2]);
        assert_eq!((f.duplicated, f.reordered), (1, 0));
    }

    #[test]
    fn flags_messages_never_sent() {
        let r = record(&[1, 2], &[]);
        let mut h = history(&[1, 2]);
        h.push(("HUMAN".into(), "no sequence number".into()));
        h.push(("HUMAN".into(), message_text(9)));
        let f = check(&r, h.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        assert_eq!((f.unexpected, f.lost, f.duplicated), (2, 0, 0));
        assert!(!f.clean());
    }
}
