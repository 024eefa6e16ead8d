//! Ranked retrieval over an agent's FAQ and texts (Okapi BM25 on Unicode word tokens).

use std::collections::HashMap;

use unicode_segmentation::UnicodeSegmentation;

use crate::agent::KnowledgeDef;

const K1: f64 = 1.2;
const B: f64 = 0.75;

/// Words too common to tell passages apart.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "i", "in", "is", "it", "me", "my", "of", "on", "or", "the", "to", "what", "which", "with",
    "you", "your", "we", "this", "that", "there", "much", "many", "please", "tell", "about",
];

/// Lower-cased word tokens without stopwords; numbers and non-Latin scripts are kept.
/// A plain English plural `s` is dropped so "cards" meets "card".
pub fn tokenize(text: &str) -> Vec<String> {
    text.unicode_words()
        .map(|w| {
            let mut w = w.to_lowercase();
            if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") && w.is_ascii() {
                w.pop();
            }
            w
        })
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassageKind {
    Faq,
    Text,
}

#[derive(Debug, Clone)]
pub struct Passage {
    pub kind: PassageKind,
    /// The FAQ question, for FAQ passages.
    pub question: Option<String>,
    /// What is said to the customer: the FAQ answer or the text chunk.
    pub answer: String,
    len: usize,
    tf: HashMap<String, u32>,
}

#[derive(Debug, Clone)]
pub struct Hit<'a> {
    pub passage: &'a Passage,
    pub score: f64,
}

/// The searchable form of an agent's knowledge, built once per agent version.
#[derive(Debug, Clone, Default)]
pub struct KnowledgeIndex {
    passages: Vec<Passage>,
    df: HashMap<String, u32>,
    avg_len: f64,
}

impl KnowledgeIndex {
    pub fn build(def: &KnowledgeDef) -> KnowledgeIndex {
        let mut passages = Vec::new();
        for q in &def.faq {
            passages.push(Passage::new(
                PassageKind::Faq,
                Some(q.question.clone()),
                q.answer.clone(),
                // The question counts twice: customers phrase things like the question.
                &format!("{} {} {}", q.question, q.question, q.answer),
            ));
        }
        for text in &def.texts {
            for chunk in chunks(text) {
                passages.push(Passage::new(PassageKind::Text, None, chunk.clone(), &chunk));
            }
        }
        let mut df: HashMap<String, u32> = HashMap::new();
        for p in &passages {
            for term in p.tf.keys() {
                *df.entry(term.clone()).or_default() += 1;
            }
        }
        let avg_len = if passages.is_empty() {
            0.0
        } else {
            passages.iter().map(|p| p.len as f64).sum::<f64>() / passages.len() as f64
        };
        KnowledgeIndex {
            passages,
            df,
            avg_len,
        }
    }

    pub fn len(&self) -> usize {
        self.passages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// The best `k` passages for `query`, highest score first; ties keep definition order.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit<'_>> {
        let terms = tokenize(query);
        if terms.is_empty() || self.passages.is_empty() {
            return Vec::new();
        }
        let n = self.passages.len() as f64;
        let mut hits: Vec<Hit<'_>> = self
            .passages
            .iter()
            .filter_map(|p| {
                let mut score = 0.0;
                for t in &terms {
                    let Some(&tf) = p.tf.get(t) else { continue };
                    let df = f64::from(*self.df.get(t).unwrap_or(&0));
                    let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                    let tf = f64::from(tf);
                    score += idf * tf * (K1 + 1.0)
                        / (tf + K1 * (1.0 - B + B * p.len as f64 / self.avg_len.max(1.0)));
                }
                (score > 0.0).then_some(Hit { passage: p, score })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        hits
    }
}

impl Passage {
    fn new(kind: PassageKind, question: Option<String>, answer: String, indexed: &str) -> Self {
        let tokens = tokenize(indexed);
        let mut tf = HashMap::new();
        for t in &tokens {
            *tf.entry(t.clone()).or_insert(0) += 1;
        }
        Passage {
            kind,
            question,
            answer,
            len: tokens.len(),
            tf,
        }
    }
}

/// Splits a text into passages at blank lines; long paragraphs are cut at sentence ends.
fn chunks(text: &str) -> Vec<String> {
    const MAX: usize = 600;
    let mut out = Vec::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if para.len() <= MAX {
            out.push(para.to_string());
            continue;
        }
        let mut cur = String::new();
        for sentence in para.split_sentence_bounds() {
            if !cur.is_empty() && cur.len() + sentence.len() > MAX {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            cur.push_str(sentence);
        }
        if !cur.trim().is_empty() {
            out.push(cur.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::FaqEntry;

    fn index() -> KnowledgeIndex {
        KnowledgeIndex::build(&KnowledgeDef {
            faq: vec![FaqEntry {
                question: "Can I use Apple Pay?".into(),
                answer: "Yes, both cards support Apple Pay and Google Pay.".into(),
            }],
            texts: vec![
                "Basic Debit\nNo monthly fee. Issuance costs €5.\n\nPremium Debit\nMonthly fee: €12.90. ATM withdrawals are free worldwide.".into(),
                "Größere Limits gelten für Premium-Kunden.".into(),
            ],
        })
    }

    #[test]
    fn ranks_the_matching_passage_first() {
        let idx = index();
        assert_eq!(idx.len(), 4);
        let hits = idx.search("What is the monthly fee of the premium card?", 3);
        assert!(
            hits[0].passage.answer.starts_with("Premium Debit"),
            "{hits:?}"
        );
        let hits = idx.search("apple pay?", 1);
        assert_eq!(hits[0].passage.kind, PassageKind::Faq);
        assert!(idx.search("the of and", 3).is_empty());
        assert!(idx.search("zebra", 3).is_empty());
    }

    #[test]
    fn tokenizes_unicode() {
        assert_eq!(
            tokenize("Größere Limits, 12.90€ cards!"),
            vec!["größere", "limit", "12.90", "card"]
        );
        let idx = index();
        let hits = idx.search("größere limits", 1);
        assert!(hits[0].passage.answer.starts_with("Größere"));
    }
}
